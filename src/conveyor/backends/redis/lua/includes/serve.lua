-- Serving groups in a fetch (see conveyor.drivers.groups): the ring's groups whose turn has
-- come, in turn order (ties by key), one job per group per round, none beyond a group's room
-- under its concurrency or its rate. Needs K_JOBS and what groups.lua needs; include groups.lua
-- first. Reads at most ``n`` groups and pops at most ``n`` live jobs (plus the entries of jobs
-- gone from under them, at most DROP_BUDGET), whatever the number of groups or jobs.

local DROP_BUDGET = 1000

-- How many of ``most`` starts the rate log ``log`` (``count`` per ``per`` seconds) allows at
-- ``now``: its free places plus its oldest entries at least ``per`` old (rates.allowance).
local function group_allowance(log, count, per, now, most)
    local length = redis.call('LLEN', log)
    local skip = math.max(length - count, 0)
    local free = count - (length - skip)
    if free >= most then
        return most
    end
    for _, at in ipairs(redis.call('LRANGE', log, skip, skip + (most - free) - 1)) do
        if (tonumber(at) or now) + per > now then
            break
        end
        free = free + 1
    end
    return math.min(free, most)
end

-- Take up to ``n`` grouped jobs for a fetch at ``now``: the ids popped, in the order served
-- (the caller leases them, or drops those no longer queued), and how many of them are queued.
-- Each group served counts its jobs active, logs their starts, takes its turn (now, or when its
-- rate window frees) and stays in the ring only while it has jobs and room.
local function serve_groups(n, now)
    local ids, live = {}, 0
    local keys = redis.call('ZRANGEBYSCORE', K_RING, '-inf', num(now), 'LIMIT', 0, n)
    if #keys == 0 then
        return ids, live
    end
    -- Per group: key, room, taken, concurrency, active, rate count, rate per, block, jobs gone
    local groups = {}
    for i, key in ipairs(keys) do
        local v = redis.call('HMGET', K_GROUPS .. 'r:' .. key, 'l', 'a', 'b')
        local concurrency, count, per = group_limits(v[1])
        local active = tonumber(v[2]) or 0
        local blocked = tonumber(v[3]) or 0
        local room = n
        if concurrency > 0 then
            room = math.min(room, concurrency - active)
        end
        if blocked > now then
            room = 0
        elseif count > 0 and room > 0 then
            room = group_allowance(K_GROUPS .. 'l:' .. key, count, per, now, room)
        end
        groups[i] = {key, room, 0, concurrency, active, count, per, blocked, false}
    end
    local drops = DROP_BUDGET
    local more = true
    while more and live < n do
        more = false
        for _, g in ipairs(groups) do
            if live >= n then
                break
            end
            while g[3] < g[2] do
                local popped = redis.call('ZPOPMIN', K_GROUPS .. ':' .. g[1])
                if #popped == 0 then
                    g[2], g[9] = g[3], true  -- no jobs left
                    break
                end
                group_queued = group_queued - 1
                local id = string.sub(popped[1], 33)
                ids[#ids + 1] = id
                local state = redis.pcall('HGET', K_JOBS .. id, 's')
                if state == 'queued' then
                    g[3] = g[3] + 1
                    live = live + 1
                    more = true
                    break
                end
                drops = drops - 1  -- an entry whose job moved on: the caller drops it
                if drops <= 0 then
                    g[2] = g[3]
                    break
                end
            end
        end
    end
    for _, g in ipairs(groups) do
        local key, taken = g[1], g[3]
        local record = K_GROUPS .. 'r:' .. key
        local turn = nil
        local room = true
        if taken > 0 then
            turn = now
            local active = g[5] + taken
            if g[6] > 0 then  -- its rate: log the starts, stamped no earlier than the newest
                local log = K_GROUPS .. 'l:' .. key
                local at = math.max(now, tonumber(redis.call('LINDEX', log, -1) or '') or now)
                local stamps = {}
                for i = 1, taken do
                    stamps[i] = num(at)
                end
                redis.call('RPUSH', log, unpack(stamps))
                redis.call('LTRIM', log, -g[6], -1)
                if redis.call('LLEN', log) >= g[6] then  -- full: its turn comes when it frees
                    turn = math.max(turn, (tonumber(redis.call('LINDEX', log, 0)) or now) + g[7])
                end
            end
            redis.call('HSET', record, 'a', int(active), 't', num(turn))
            room = g[4] == 0 or active < g[4]
        elseif g[4] > 0 and g[5] >= g[4] then
            room = false  -- full (its limit was lowered): it comes back when a job leaves
        elseif g[8] > now then
            turn = g[8]
            redis.call('HSET', record, 't', num(turn))
        elseif g[2] == 0 and g[6] > 0 then  -- its rate window is full: its turn comes later
            local recent = redis.call('LRANGE', K_GROUPS .. 'l:' .. key, -g[6], -g[6])
            turn = math.max(now, (tonumber(recent[1]) or now) + g[7])
            redis.call('HSET', record, 't', num(turn))
        end
        local empty = g[9]
        if taken > 0 and room and not empty then
            empty = redis.call('ZCARD', K_GROUPS .. ':' .. key) == 0
        end
        if empty or not room then
            redis.call('ZREM', K_RING, key)
        elseif turn then
            redis.call('ZADD', K_RING, num(turn), key)
        end
        if empty and taken == 0 and g[5] == 0 then
            local v = redis.call('HMGET', record, 'l', 'b')
            group_idle(key, v[1], v[2], now)
        end
    end
    return ids, live
end

-- The order keys {priority, run at µs, seq, id} of the next job of each of the first ``n``
-- groups whose turn has come: what a fetch of several queues weighs against the others.
local function peek_groups(n, now)
    local out = {}
    for _, key in ipairs(redis.call('ZRANGEBYSCORE', K_RING, '-inf', num(now), 'LIMIT', 0, n)) do
        local first = redis.call('ZRANGE', K_GROUPS .. ':' .. key, 0, 0, 'WITHSCORES')
        if first[1] then
            local m = first[1]
            out[#out + 1] = {first[2], string.sub(m, 1, 16), string.sub(m, 17, 32),
                string.sub(m, 33)}
        end
    end
    return out
end
