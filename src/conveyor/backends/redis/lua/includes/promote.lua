-- Scheduled and retrying jobs whose time has come become queued. Needs K_JOBS, K_SCHEDULED,
-- K_RETRYING, K_SCHEDULED_BY_SEQ, K_RETRYING_BY_SEQ, K_QUEUED_BY_SEQ; include place.lua and
-- wake.lua first.

-- Promote the job behind ``member`` of ``set`` (scheduled or retrying, whose listing index is
-- ``by_seq``); false if it is not there.
local function promote_member(set, by_seq, member)
    if redis.call('ZREM', set, member) == 0 then
        return false
    end
    local id = string.sub(member, 17)
    local key = K_JOBS .. id
    local v = redis.call('HMGET', key, 'p', 'r', 'q', 's', 'g', 'gl')
    redis.call('ZREM', by_seq, id)
    if not v[4] then
        return false  -- a member whose job hash is gone: dropping the member is all there is to do
    end
    local seq = tonumber(v[3]) or 0
    redis.call('HSET', key, 's', 'queued')
    place(id, tonumber(v[1]) or 0, seconds(v[2]) or 0, seq, v[5], v[6])
    return true
end

-- Promote every due job of both sets, earliest due first, at most ``budget``; how many moved.
local function promote_due(now, budget)
    local upto = num(now)
    local s = redis.call('ZRANGEBYSCORE', K_SCHEDULED, '-inf', upto, 'WITHSCORES',
        'LIMIT', 0, budget)
    local r = redis.call('ZRANGEBYSCORE', K_RETRYING, '-inf', upto, 'WITHSCORES',
        'LIMIT', 0, budget)
    local i, j, moved = 1, 1, 0
    while moved < budget and (s[i] or r[j]) do
        -- Equal due times go by member, which starts with the sequence number: enqueue order.
        local take_s = s[i] and (not r[j] or tonumber(s[i + 1]) < tonumber(r[j + 1])
            or (tonumber(s[i + 1]) == tonumber(r[j + 1]) and s[i] < r[j]))
        if take_s then
            if promote_member(K_SCHEDULED, K_SCHEDULED_BY_SEQ, s[i]) then moved = moved + 1 end
            i = i + 2
        else
            if promote_member(K_RETRYING, K_RETRYING_BY_SEQ, r[j]) then moved = moved + 1 end
            j = j + 2
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
