-- Queued jobs: placing a job among them and taking the first ones in order.
--
-- Order is (priority, run at, seq). Priority-0 jobs that arrive in order (almost all of them:
-- new jobs run now, and time moves forward) go to the ready list, which costs a few bytes a job;
-- anything else goes to the queued sorted set. Taking merges the two.

-- The ready list's first and last jobs' (run at in µs, seq), read once per script.
local ready_ends = nil

local function order_of(id)
    local v = redis.call('HMGET', K_JOBS .. id, 'r', 'q')
    -- A job hash that is gone or garbled sorts first: the next fetch takes it and drops or fails it.
    return {math.floor(tonum(v[1], 0) * 1000000), tonum(v[2], 0)}
end

local function load_ready_ends()
    if ready_ends == nil then
        local first = redis.call('LINDEX', K_READY, 0)
        if first then
            ready_ends = {head = order_of(first), tail = order_of(redis.call('LINDEX', K_READY, -1))}
        else
            ready_ends = false
        end
    end
    return ready_ends
end

local function before(a, b)
    return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2])
end

-- Make job ``id`` (already in state queued) runnable.
local function place(id, priority, run_at, seq)
    if priority == 0 then
        local key = {math.floor(run_at * 1000000), seq}
        local ends = load_ready_ends()
        if not ends then
            redis.call('RPUSH', K_READY, id)
            ready_ends = {head = key, tail = key}
            return
        end
        if not before(key, ends.tail) then
            redis.call('RPUSH', K_READY, id)
            ends.tail = key
            return
        end
        if before(key, ends.head) then
            redis.call('LPUSH', K_READY, id)
            ends.head = key
            return
        end
    end
    redis.call('ZADD', K_QUEUED, int(priority), qmember(run_at, seq, id))
end

-- Remove queued job ``id`` from wherever ``place`` put it.
local function unplace(id, priority, run_at, seq)
    if redis.call('ZREM', K_QUEUED, qmember(run_at, seq, id)) == 0 then
        redis.call('LREM', K_READY, 1, id)
        ready_ends = nil
    end
end

-- The queued set's first member and its priority, or nil.
local function queued_head()
    local z = redis.call('ZRANGE', K_QUEUED, 0, 0, 'WITHSCORES')
    if z[1] then
        return z[1], tonumber(z[2])
    end
    return nil, nil
end

-- Whether the queued set's first member runs before the ready list's first job.
local function queued_first(member, priority, ready_id)
    if priority ~= 0 then
        return priority < 0
    end
    local z = {tonumber(string.sub(member, 1, 16)), tonumber(string.sub(member, 17, 32))}
    return before(z, order_of(ready_id))
end

-- Remove and return the ids of the first ``limit`` queued jobs, in run order.
local function take(limit)
    local ids = {}
    while #ids < limit do
        local member, priority = queued_head()
        if member == nil or priority > 0 then
            -- Every ready job runs before the queued set's first: take them in one call.
            local got = redis.call('LPOP', K_READY, limit - #ids)
            if got then
                for _, id in ipairs(got) do
                    ids[#ids + 1] = id
                end
            end
            if member == nil or #ids >= limit then
                break
            end
        end
        local head = redis.call('LINDEX', K_READY, 0)
        if head and not queued_first(member, priority, head) then
            redis.call('LPOP', K_READY)
            ids[#ids + 1] = head
        else
            redis.call('ZREM', K_QUEUED, member)
            ids[#ids + 1] = qid(member)
        end
    end
    ready_ends = nil
    return ids
end

-- The (priority, run at µs, seq, id) of the first ``limit`` queued jobs, without taking them.
local function peek(limit)
    local out = {}
    local ready = redis.call('LRANGE', K_READY, 0, limit - 1)
    local queued = redis.call('ZRANGE', K_QUEUED, 0, limit - 1, 'WITHSCORES')
    local r, z = 1, 1
    while #out < limit and (ready[r] or queued[z]) do
        local use_queued
        if not ready[r] then
            use_queued = true
        elseif not queued[z] then
            use_queued = false
        else
            use_queued = queued_first(queued[z], tonumber(queued[z + 1]), ready[r])
        end
        if use_queued then
            local m = queued[z]
            out[#out + 1] = {queued[z + 1], string.sub(m, 1, 16), string.sub(m, 17, 32), qid(m)}
            z = z + 2
        else
            local o = order_of(ready[r])
            out[#out + 1] = {'0', int(o[1]), int(o[2]), ready[r]}
            r = r + 1
        end
    end
    return out
end
