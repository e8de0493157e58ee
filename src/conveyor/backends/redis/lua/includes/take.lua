-- Taking the first queued jobs in order: a merge of the ready list and the queued set.
-- Needs K_JOBS, K_META, K_READY, K_QUEUED, K_DEAD; include place.lua first.
--
-- Stale entries: a job cancelled while it waits in the ready list keeps its entry there
-- (finding the entry would take a scan of the list), and K_DEAD counts such entries by id. A
-- job's entries lie in the order they were appended (see place.lua), so of the entries of an
-- id met from the head, the first ``dead[id]`` are stale and only the one after them is the
-- job's place. Taking passes over stale entries and uncounts them, at most 5,000 per call, so
-- that a fetch stays short however many jobs were cancelled (the next fetch goes on); K_DEAD
-- is read only when it exists, so a queue without cancels pays one EXISTS per fetch.
--
-- Few helpers and few captured variables: a script makes all of its closures anew on every
-- call, and each captured variable adds to that.

-- Whether the queued set's first ``member`` (of ``priority``) runs before ready job ``ready_id``.
local function queued_first(member, priority, ready_id)
    if priority ~= 0 then
        return priority < 0
    end
    local z = {tonumber(string.sub(member, 1, 16)), tonumber(string.sub(member, 17, 32))}
    return before(z, order_of(ready_id))
end

-- Remove and return the ids of the first ``limit`` queued jobs, in run order (fewer if the
-- budget of stale entries to pass over runs out first).
local function take(limit)
    save_tail()  -- appends still buffered must be in the list before taking from it
    local ids = {}
    local dead = redis.call('EXISTS', K_DEAD) == 1
    local skips = 5000  -- stale entries this call may still pass over
    local popped = false
    local left, was = {}, {}  -- id -> stale entries still ahead / counted before this call

    -- Of ``got`` (just popped, in order), append the live ids to ``ids`` (made only when
    -- there are stale entries to pass over).
    local keep_live = dead and function(got)
        local counts = redis.call('HMGET', K_DEAD, unpack(got))
        for i, id in ipairs(got) do
            if left[id] == nil then
                was[id] = tonumber(counts[i]) or 0
                left[id] = was[id]
            end
            if left[id] > 0 then
                left[id] = left[id] - 1
                skips = skips - 1
            else
                ids[#ids + 1] = id
            end
        end
    end

    while #ids < limit and skips > 0 do
        local z = redis.call('ZRANGE', K_QUEUED, 0, 0, 'WITHSCORES')
        local member, priority = z[1], tonumber(z[2])
        if member == nil or priority > 0 then
            -- Every ready job runs before the queued set's first: pop them in one go.
            local wanted = math.min(limit - #ids, 500)
            local got = redis.call('LPOP', K_READY, wanted)
            if got then
                popped = true
                if dead then
                    keep_live(got)
                else
                    for _, id in ipairs(got) do
                        ids[#ids + 1] = id
                    end
                end
            end
            if not got or #got < wanted then
                -- The ready list ran out: the queued set's first comes next, if any.
                if member == nil or #ids >= limit then
                    break
                end
                redis.call('ZREM', K_QUEUED, member)
                ids[#ids + 1] = string.sub(member, 33)
            end
        else
            local head = redis.call('LINDEX', K_READY, 0)
            local stale = head and dead
                and (left[head] or tonumber(redis.call('HGET', K_DEAD, head)) or 0) > 0
            if stale then
                redis.call('LPOP', K_READY)  -- a stale entry: pass over it
                popped = true
                keep_live({head})
            elseif head and not queued_first(member, priority, head) then
                redis.call('LPOP', K_READY)
                popped = true
                ids[#ids + 1] = head
            else
                redis.call('ZREM', K_QUEUED, member)
                ids[#ids + 1] = string.sub(member, 33)
            end
        end
    end
    if dead then  -- write back the counts of the stale entries passed over
        for id, count in pairs(left) do
            if count <= 0 and was[id] > 0 then
                redis.call('HDEL', K_DEAD, id)
            elseif count ~= was[id] then
                redis.call('HSET', K_DEAD, id, string.format('%d', count))
            end
        end
    end
    if popped and redis.call('LLEN', K_READY) == 0 then
        -- Empty: any job may be appended again, however old its run time, and no entry is stale.
        redis.call('HDEL', K_META, 'tr', 'tq')
        if dead then
            redis.call('DEL', K_DEAD)
        end
        ready_tail, tail_dirty = false, false
    end
    return ids
end

-- The (priority, run at µs, seq, id) of the first ``limit`` queued jobs, without taking them.
local function peek(limit)
    -- The first ``limit`` live ids of the ready list, passing over stale ones.
    local ready = redis.call('LRANGE', K_READY, 0, limit - 1)
    if redis.call('EXISTS', K_DEAD) == 1 then
        ready = {}
        local left, start, skips = {}, 0, 5000
        while #ready < limit and skips > 0 do
            local slice = redis.call('LRANGE', K_READY, start, start + 499)
            if #slice == 0 then
                break
            end
            local counts = redis.call('HMGET', K_DEAD, unpack(slice))
            for i, id in ipairs(slice) do
                left[id] = left[id] or tonumber(counts[i]) or 0
                if left[id] > 0 then
                    left[id] = left[id] - 1
                    skips = skips - 1
                elseif #ready < limit then
                    ready[#ready + 1] = id
                end
            end
            start = start + 500
        end
    end
    local out = {}
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
            out[#out + 1] = {queued[z + 1], string.sub(m, 1, 16), string.sub(m, 17, 32),
                string.sub(m, 33)}
            z = z + 2
        else
            local o = order_of(ready[r])
            out[#out + 1] = {'0', string.format('%d', o[1]), string.format('%d', o[2]), ready[r]}
            r = r + 1
        end
    end
    return out
end
