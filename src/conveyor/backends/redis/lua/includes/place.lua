-- Placing a queued job among the others. Order is (priority, run at, seq). Priority-0 jobs that
-- arrive in order (almost all of them: new jobs run now, and time moves forward) are appended
-- to the ready list, which costs a few bytes a job; anything else goes to the queued sorted set.
--
-- The (run at in µs, seq) of the last job appended to the ready list is kept in the meta hash
-- (fields tr, tq) rather than read from that job, to save commands on the hot path. It never
-- falls below the list's true last job, so appending only what sorts after it keeps the list in
-- order. Appends are buffered and sent in one RPUSH by ``save_tail``, which a script that
-- places jobs calls before it returns (and before it reads the list again).

local ready_tail = nil  -- {run at µs, seq}, or false when any job may be appended
local tail_dirty = false
local appending = {}  -- ids to append to the ready list, in order

local function load_tail(meta_tr, meta_tq)
    if meta_tr then
        ready_tail = {tonumber(meta_tr) or 0, tonumber(meta_tq) or 0}
    else
        ready_tail = false
    end
end

local function clamp(x, low, high)
    if x ~= x then  -- NaN
        return low
    end
    return math.min(math.max(x, low), high)
end

local function place(id, priority, run_at, seq)
    -- Clamped to what the fixed-width members hold (callers validate far inside these bounds;
    -- a foreign producer's garbage must not corrupt the members' layout).
    local micros = clamp(math.floor(run_at * 1000000), 0, 9999999999999999)
    priority = clamp(priority, -1000000000, 1000000000)
    if priority == 0 then
        if ready_tail == nil then
            local v = redis.call('HMGET', K_META, 'tr', 'tq')
            load_tail(v[1], v[2])
        end
        if not ready_tail or micros > ready_tail[1]
            or (micros == ready_tail[1] and seq >= ready_tail[2]) then
            appending[#appending + 1] = id
            ready_tail = {micros, seq}
            tail_dirty = true
            return
        end
    end
    redis.call('ZADD', K_QUEUED, string.format('%d', priority),
        string.format('%016d%016d', micros, seq) .. id)
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
end

-- How a script that placed jobs ends: their appends written and, if any became runnable, one
-- idle worker woken (include wake.lua first).
local function settle(woken)
    save_tail()
    if woken then
        wake()
    end
end

-- Remove queued job ``id`` from wherever ``place`` put it.
local function unplace(id, priority, run_at, seq)
    save_tail()
    local micros = clamp(math.floor(run_at * 1000000), 0, 9999999999999999)
    local member = string.format('%016d%016d', micros, seq) .. id
    if redis.call('ZREM', K_QUEUED, member) == 0 then
        redis.call('LREM', K_READY, 1, id)
    end
end

-- The (run at in µs, seq) of job ``id``.
local function order_of(id)
    local v = redis.call('HMGET', K_JOBS .. id, 'r', 'q')
    -- A job hash that is gone or garbled sorts first: the next fetch takes it and drops or fails it.
    return {math.floor((seconds(v[1]) or 0) * 1000000), tonumber(v[2]) or 0}
end

local function before(a, b)
    return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2])
end
