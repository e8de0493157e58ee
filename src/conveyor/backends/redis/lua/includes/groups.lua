-- Groups (see conveyor.drivers.groups): a grouped job waits in its group, not among the queue's
-- plain jobs (place.lua puts it there). Needs K_GROUPS, K_GROUP_RECORDS, K_RING, K_GROUP_IDLE
-- and K_META; include common.lua and members.lua first.
--
-- The keys of group <key> are built from K_GROUPS ('{<prefix>:<queue>}:g'), so they share the
-- queue's hash tag (one Cluster slot) whatever the key holds:
--   K_GROUPS .. ':' .. key   its queued jobs, a zset scored and membered as the queued set
--                            (priority; run at, seq, id): ZPOPMIN takes the next in run order
--   K_GROUPS .. 'l:' .. key  its rate log, start times oldest first (at most <rate count>)
-- Its record is one field of K_GROUP_RECORDS, so that a fetch reads and writes the records of
-- all the groups it serves in one command each: the text '<concurrency>,<rate count>,<rate
-- per>,<active>,<turn>,<blocked until>,<log length>,<newest start>' (the first three are the
-- limits of the job placed in it last, as a job's gl holds them; the block and the newest start
-- are '' when there are none). K_RING holds the groups with queued jobs and room under their
-- concurrency, scored by turn (in whole microseconds: ring_score; the record's turn is exact):
-- a fetch reads those whose turn has come, a few at a time, and never sees a full group or one
-- without jobs. K_GROUP_IDLE holds the groups with no queued or active job, scored by when
-- their record may go (their rate window and block passed): what pruning reads. A job hash
-- keeps its group's key (g) and limits (gl), so that any path that places it again restores
-- the group, record included. The meta hash's 'gq' counts the queue's grouped queued jobs.

local group_now = nil  -- the script's now, set before placing or leaving: a new record's turn
local group_seen = {}  -- key -> limits of the groups this call put in order already
local group_queued = 0  -- change of the grouped queued count not yet written to 'gq'
local group_leaving = {}  -- key -> jobs of the group that left ``active``, not yet counted

-- The ring is kept in Redis's skiplist encoding, never the listpack one a sorted set of up to
-- 128 short members gets: a fetch moves every group it serves, and in a listpack each move
-- scans the whole set (several microseconds a group). A member longer than a listpack holds
-- (64 bytes) does that; this one, scored +inf, is never read as a group (no key holds a NUL).
-- A NUL and 64 dashes, written out: a literal costs nothing per call, where building it
-- (string.rep, a concatenation) ran on every call of every script that includes this.
local RING_SENTINEL = '\0----------------------------------------------------------------'

-- A time as the ring scores it: whole microseconds (the record's turn stays exact).
local function ring_score(at)
    return string.format('%d', math.floor(at * 1000000 + 0.5))
end

-- A record's text as a table (fields limits, c, count, per, a, t, b, ln, ls; b and ls nil when
-- none), or nil when there is none. A garbled one reads as a group without limits whose turn
-- is now.
local function group_record(text)
    if not text then
        return nil
    end
    local c, count, per, a, t, b, ln, ls = string.match(text,
        '^(%d+),(%d+),([^,]+),([^,]*),([^,]*),([^,]*),([^,]*),([^,]*)$')
    if not c then
        c, count, per, a, t, b, ln, ls = '0', '0', '0', '0', '', '', '0', ''
    end
    return {limits = c .. ',' .. count .. ',' .. per, c = tonumber(c), count = tonumber(count),
        per = tonumber(per) or 0, a = tonumber(a) or 0, t = tonumber(t) or group_now or 0,
        b = tonumber(b), ln = tonumber(ln) or 0, ls = tonumber(ls)}
end

-- A new record with ``limits`` (a job's gl), its turn ``turn``.
local function group_new(limits, turn)
    return group_record(limits .. ',0,' .. num(turn) .. ',,0,')
end

local function group_text(r)
    return r.limits .. ',' .. int(r.a) .. ',' .. num(r.t) .. ',' .. (r.b and num(r.b) or '')
        .. ',' .. int(r.ln) .. ',' .. (r.ls and num(r.ls) or '')
end

-- Write ``writes`` (key, text pairs) to the records: one command per 500 groups.
local function group_write(writes)
    for i = 1, #writes, 1000 do  -- unpack() is limited by Lua's stack
        redis.call('HSET', K_GROUP_RECORDS, unpack(writes, i, math.min(i + 999, #writes)))
    end
end

-- The records' texts of ``keys``, in order (false where there is none).
local function group_texts(keys)
    local texts = {}
    for i = 1, #keys, 500 do
        local got = redis.call('HMGET', K_GROUP_RECORDS, unpack(keys, i, math.min(i + 499, #keys)))
        for j = 1, #got do
            texts[i + j - 1] = got[j]
        end
    end
    return texts
end

-- Refuse ARGV[i] (a group key, '' for none) and ARGV[i + 1] (its limits) unless both are
-- what conveyor.drivers.groups.check_group lets through; plain job: both ''.
local function group_args(i)
    local key, limits = ARGV[i], ARGV[i + 1]
    if key == '' then
        if limits ~= '' then
            refuse(i + 1, 'a job without a group has no group limits')
        end
        return
    end
    if #key > 2048 or string.find(key, '%z') then
        refuse(i, 'the group key must be 1 to 512 characters without NUL')
    end
    local c, count, per = string.match(limits, '^(%d+),(%d+),([^,]+)$')
    c, count, per = tonumber(c), tonumber(count), tonumber(per)
    if not (c and c <= 10000 and count <= 1000 and per and per >= 0 and per <= 86400
        and (count == 0) == (per == 0)) then
        refuse(i + 1, 'group limits must be <concurrency 0-10000>,<rate count 0-1000>,'
            .. '<rate per 0-86400>, with a count and a per or neither')
    end
end

-- Note that group ``key`` (record ``r``) holds no job: its record may go once its block and
-- its rate window have passed.
local function group_idle(key, r, now)
    local at = math.max(now, r.b or 0)
    if r.ls then
        at = math.max(at, r.ls + r.per)
    end
    redis.call('ZADD', K_GROUP_IDLE, num(at), key)
end

-- A job of group ``key`` left ``active``: its place is freed by group_settle, once per group
-- for all of a call's jobs.
local function group_leave(key)
    group_leaving[key] = (group_leaving[key] or 0) + 1
end

-- Free the places of the jobs that left ``active`` (group_leave), at ``group_now``: a group
-- that was full and has room again rejoins the ring, one that runs nothing and holds nothing
-- becomes idle. Whether a group became eligible now (the caller wakes a worker then). Scripts
-- call it before they return (group_flush does).
local function group_settle()
    local keys, lefts = {}, {}
    for key, left in pairs(group_leaving) do
        keys[#keys + 1] = key
        lefts[#keys] = left
    end
    group_leaving = {}
    if #keys == 0 then
        return false
    end
    local woken, writes = false, {}
    for i, text in ipairs(group_texts(keys)) do
        local key, r = keys[i], group_record(text)
        if r then  -- else no record (a store written before groups): nothing was counted
            local before = r.a
            r.a = math.max(r.a - lefts[i], 0)
            writes[#writes + 1] = key
            writes[#writes + 1] = group_text(r)
            local freed = r.c > 0 and before >= r.c and r.a < r.c
            -- Only two steps matter: the group had been full, or now runs nothing.
            if freed or r.a == 0 then
                group_seen[key] = nil
                if redis.call('ZCARD', K_GROUPS .. ':' .. key) > 0 then
                    if freed then
                        redis.call('ZADD', K_RING, ring_score(r.t), key)
                        woken = woken or r.t <= group_now
                    end
                else
                    group_idle(key, r, group_now)
                end
            end
        end
    end
    group_write(writes)
    return woken
end

-- Take queued job ``member`` (of the queued set's form) out of group ``key`` (cancelled or
-- deleted); whether it was there. The caller drops its listing index entry.
local function group_out(key, member, now)
    local jobs = K_GROUPS .. ':' .. key
    if redis.call('ZREM', jobs, member) == 0 then
        return false
    end
    group_queued = group_queued - 1
    if redis.call('ZCARD', jobs) == 0 then
        group_seen[key] = nil
        redis.call('ZREM', K_RING, key)
        local r = group_record(redis.call('HGET', K_GROUP_RECORDS, key))
        if r and r.a == 0 then
            group_idle(key, r, now)
        end
    end
    return true
end

-- Write the change of the grouped queued count (and free what group_leave noted); every script
-- that changes either calls this (save_tail does) before it returns.
local function group_flush()
    if next(group_leaving) then
        group_settle()
    end
    if group_queued ~= 0 then
        redis.call('HINCRBY', K_META, 'gq', group_queued)
        group_queued = 0
    end
end
