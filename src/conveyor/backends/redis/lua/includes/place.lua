-- Placing a queued job among the others. Order is (priority, run at, seq). Priority-0 jobs that
-- arrive in order (almost all of them: new jobs run now, and time moves forward) are appended
-- to the ready list, which costs a few bytes a job; anything else goes to the queued sorted set.
-- Needs K_JOBS, K_META, K_READY, K_QUEUED, K_QUEUED_BY_SEQ, K_DEAD and what groups.lua needs;
-- include members.lua and groups.lua first. A grouped job (``group``: its key, ``limits``: its
-- group's limits) goes to its group instead (see groups.lua), so that every path that places a
-- job keeps the groups.
--
-- The (run at in µs, seq) of the last job appended to the ready list is kept in the meta hash
-- (fields tr, tq) rather than read from that job, to save commands on the hot path. It never
-- falls below the list's true last job, so appending only what sorts after it keeps the list in
-- order. Appends are buffered and sent in one RPUSH by ``save_tail``, which a script that
-- places jobs calls before it returns (and before it reads the list again).
--
-- The ready list is only ever appended to at its tail and popped at its head, so a job's
-- entries in it are in the order they were appended: a job that left the queue some other way
-- (cancelled) keeps its entry, counted in the ``dead`` hash (see take.lua), and any entry it
-- gets later lies behind that one.
--
-- Only a job whose seq is above the tail's is appended, so the list is in strictly increasing
-- seq as well: listing finds a page in it by bisection, and needs no index entry per ready job
-- (most of a waiting job's memory otherwise). A job placed again (retried, rescued) keeps its
-- old seq and so goes to the queued set, whose members alone are in the queued listing index.
-- A job that still has a stale entry (cancelled there, then retried: with a new seq) goes to the
-- queued set too, so an id has at most one entry in the list: one that ``dead`` counts is
-- stale, any other is live and its job's seq is the entry's. So ``dead`` holds one field per
-- stale entry, and its length counts them.

local ready_tail = nil  -- {run at µs, seq}, or false when any job may be appended
local tail_dirty = false
local appending = {}  -- ids to append to the ready list, in order
local any_dead = nil  -- whether K_DEAD exists, read at the first append

-- Whether job ``id`` has a stale entry in the ready list.
local function has_stale(id)
    if any_dead == nil then
        any_dead = redis.call('EXISTS', K_DEAD) == 1
    end
    return any_dead and redis.call('HEXISTS', K_DEAD, id) == 1
end

local function load_tail(meta_tr, meta_tq)
    if meta_tr then
        ready_tail = {tonumber(meta_tr) or 0, tonumber(meta_tq) or 0}
    else
        ready_tail = false
    end
end

-- Put queued job ``id`` in group ``key``, whose limits become ``limits``; the group joins the
-- ring when it has room. The first placement in a group by a call puts the group in order;
-- the next ones with the same limits only add their job.
local function group_place(key, limits, priority, run_at, seq, id)
    redis.call('ZADD', K_GROUPS .. ':' .. key, string.format('%d', priority),
        qmember(run_at, seq, id))
    redis.call('ZADD', K_QUEUED_BY_SEQ, string.format('%d', seq), id)
    group_queued = group_queued + 1
    if group_seen[key] == limits then
        return
    end
    group_seen[key] = limits
    local r = group_record(redis.call('HGET', K_GROUP_RECORDS, key))
    if not r then  -- a new group takes its turn now
        r = group_new(limits, group_now)
        redis.call('HSET', K_GROUP_RECORDS, key, group_text(r))
    elseif r.limits ~= limits then
        local fresh = group_new(limits, r.t)
        r.limits, r.c, r.count, r.per = limits, fresh.c, fresh.count, fresh.per
        redis.call('HSET', K_GROUP_RECORDS, key, group_text(r))
    end
    if r.c == 0 or r.a < r.c then
        redis.call('ZADD', K_RING, ring_score(r.t), key, '+inf', RING_SENTINEL)
    else
        redis.call('ZREM', K_RING, key)  -- its limit was lowered below what runs
    end
    redis.call('ZREM', K_GROUP_IDLE, key)
end

local function place(id, priority, run_at, seq, group, limits)
    if not (priority >= -1000000000) then  -- below, or NaN (a foreign producer's garbage)
        priority = -1000000000
    elseif priority > 1000000000 then
        priority = 1000000000
    end
    if group then
        group_place(group, limits or '', priority, run_at, seq, id)
        return
    end
    if priority == 0 then
        local micros = micros_of(run_at)
        if ready_tail == nil then
            local v = redis.call('HMGET', K_META, 'tr', 'tq')
            load_tail(v[1], v[2])
        end
        if (not ready_tail or (micros >= ready_tail[1] and seq > ready_tail[2]))
            and not has_stale(id) then
            appending[#appending + 1] = id
            ready_tail = {micros, seq}
            tail_dirty = true
            return
        end
    end
    redis.call('ZADD', K_QUEUED, string.format('%d', priority), qmember(run_at, seq, id))
    redis.call('ZADD', K_QUEUED_BY_SEQ, string.format('%d', seq), id)
end

local function save_tail()
    for i = 1, #appending, 500 do  -- unpack() is limited by Lua's stack: 500 at a time
        redis.call('RPUSH', K_READY, unpack(appending, i, math.min(i + 499, #appending)))
    end
    appending = {}
    if tail_dirty then
        redis.call('HSET', K_META, 'tr', string.format('%d', ready_tail[1]),
            'tq', string.format('%d', ready_tail[2]))
        tail_dirty = false
    end
    group_flush()
end

-- The (run at in µs, seq) of job ``id``.
local function order_of(id)
    local v = redis.call('HMGET', K_JOBS .. id, 'r', 'q')
    -- A job hash that is gone or garbled sorts first: the next fetch takes it and drops it.
    return {math.floor((seconds(v[1]) or 0) * 1000000), tonumber(v[2]) or 0}
end

local function before(a, b)
    return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2])
end
