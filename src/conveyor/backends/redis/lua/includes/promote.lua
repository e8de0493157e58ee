-- Scheduled and retrying jobs whose time has come become queued.

-- Promote the job behind ``member`` of ``set`` (scheduled or retrying); false if it is not there.
local function promote_member(set, member)
    if redis.call('ZREM', set, member) == 0 then
        return false
    end
    local id = string.sub(member, 17)
    local key = K_JOBS .. id
    local v = redis.call('HMGET', key, 'p', 'r', 'q', 's')
    if not v[4] then
        return false  -- a member whose job hash is gone: dropping the member is all there is to do
    end
    redis.call('HSET', key, 's', 'queued')
    place(id, tonumber(v[1]) or 0, seconds(v[2]) or 0, tonumber(v[3]) or 0)
    return true
end

-- Promote every due job of both sets, at most ``budget``; return how many moved.
local function promote_due(now, budget)
    local moved = 0
    for _, set in ipairs({K_SCHEDULED, K_RETRYING}) do
        if moved >= budget then
            break
        end
        local due = redis.call('ZRANGEBYSCORE', set, '-inf', num(now), 'LIMIT', 0, budget - moved)
        for _, member in ipairs(due) do
            if promote_member(set, member) then
                moved = moved + 1
            end
        end
    end
    if moved > 0 then
        wake()
    end
    return moved
end

-- The earliest run time among scheduled and retrying jobs, or nil.
local function next_due()
    local best = nil
    for _, set in ipairs({K_SCHEDULED, K_RETRYING}) do
        local first = redis.call('ZRANGE', set, 0, 0, 'WITHSCORES')
        if first[2] then
            local at = tonumber(first[2])
            if best == nil or at < best then
                best = at
            end
        end
    end
    return best
end
