-- Taking the first queued jobs in order: a merge of the ready list and the queued set.

-- Whether the queued set's first ``member`` (of ``priority``) runs before ready job ``ready_id``.
local function queued_first(member, priority, ready_id)
    if priority ~= 0 then
        return priority < 0
    end
    local z = {tonumber(string.sub(member, 1, 16)), tonumber(string.sub(member, 17, 32))}
    return before(z, order_of(ready_id))
end

-- Remove and return the ids of the first ``limit`` queued jobs, in run order.
local function take(limit)
    save_tail()  -- appends still buffered must be in the list before taking from it
    local ids = {}
    local took_ready = false
    while #ids < limit do
        local z = redis.call('ZRANGE', K_QUEUED, 0, 0, 'WITHSCORES')
        local member, priority = z[1], tonumber(z[2])
        if member == nil or priority > 0 then
            -- Every ready job runs before the queued set's first: take them in one call.
            local got = redis.call('LPOP', K_READY, limit - #ids)
            took_ready = true
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
            took_ready = true
            ids[#ids + 1] = head
        else
            redis.call('ZREM', K_QUEUED, member)
            ids[#ids + 1] = string.sub(member, 33)
        end
    end
    if took_ready and redis.call('LLEN', K_READY) == 0 then
        -- Empty: any job may be appended again, however old its run time.
        redis.call('HDEL', K_META, 'tr', 'tq')
        ready_tail, tail_dirty = false, false
    end
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
