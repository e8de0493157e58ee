-- Serving groups in a fetch (see conveyor.drivers.groups): the ring's groups whose turn has
-- come, in turn order (ties by key), one job per group per round, none beyond a group's room
-- under its concurrency or its rate. Needs what groups.lua needs; include groups.lua first.
--
-- Each group served costs a handful of commands however many of its jobs it gets: its record
-- read, its queued count, one pop of its share, its record and ring entry written (and, with a
-- rate, one append to its log). The record keeps its log's length (ln) and newest stamp (ls) so
-- that a rate that does not bind costs no read of the log. Reads at most ``n`` groups.

-- How many of ``most`` starts the rate log ``log`` (``count`` per ``per`` seconds, ``length``
-- entries) allows at ``now``: its free places plus its oldest entries at least ``per`` old
-- (conveyor.drivers.rates.allowance).
local function group_allowance(log, length, count, per, now, most)
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

-- Take up to ``n`` grouped jobs for a fetch at ``now`` from the groups ``keys`` (the ring's
-- first whose turn has come, in order; read anew when nil): the ids, in the order served, and
-- id -> group of each. Each group served counts its jobs active, logs their starts, takes its
-- turn (now, or when its rate window frees) and stays in the ring only while it has jobs and
-- room. The caller leases the ids, and hands a job no longer queued back to group_leave.
local function serve_groups(n, now, keys)
    keys = keys or redis.call('ZRANGEBYSCORE', K_RING, '-inf', ring_score(now), 'LIMIT', 0, n)
    local ids, group_of = {}, {}
    if #keys == 0 then
        return ids, group_of
    end
    -- Per group: {key, cap, share, concurrency, active, rate count, rate per, block, queued,
    -- log length, newest stamp, turn}
    local groups = {}
    for i, key in ipairs(keys) do
        local v = redis.call('HMGET', K_GROUPS .. 'r:' .. key, 'l', 'a', 'b', 'ln', 'ls', 't')
        local concurrency, count, per = group_limits(v[1])
        local active = tonumber(v[2]) or 0
        local blocked = tonumber(v[3]) or 0
        local length = tonumber(v[4]) or 0
        local queued = redis.call('ZCARD', K_GROUPS .. ':' .. key)
        local cap = math.min(n, queued)
        if concurrency > 0 then
            cap = math.min(cap, concurrency - active)
        end
        if blocked > now then
            cap = 0
        elseif count > 0 and cap > 0 then
            cap = group_allowance(K_GROUPS .. 'l:' .. key, length, count, per, now, cap)
        end
        groups[i] = {key, cap, 0, concurrency, active, count, per, blocked, queued, length,
            tonumber(v[5]), tonumber(v[6]) or now}
    end
    -- Shares by rounds, one job per group per round, in turn order, without a command.
    local total, more = 0, true
    while more and total < n do
        more = false
        for _, g in ipairs(groups) do
            if total >= n then
                break
            end
            if g[3] < g[2] then
                g[3], total, more = g[3] + 1, total + 1, true
            end
        end
    end
    local popped = {}  -- per group, its ids in run order
    local ringed, unringed = {}, {}  -- the ring's changes, sent in one ZADD and one ZREM
    for i, g in ipairs(groups) do
        local key, share = g[1], g[3]
        local record = K_GROUPS .. 'r:' .. key
        local turn, room, queued = nil, true, g[9]
        popped[i] = {}
        if share > 0 then
            local got = redis.call('ZPOPMIN', K_GROUPS .. ':' .. key, share)
            for j = 1, #got, 2 do
                local id = string.sub(got[j], 33)
                popped[i][#popped[i] + 1] = id
                group_of[id] = key
            end
            share = #popped[i]
            queued = queued - share
            group_queued = group_queued - share
            turn = now
            local fields = {'a', int(g[5] + share), 't', ''}
            if g[6] > 0 then  -- its rate: log the starts, stamped no earlier than the newest
                local log = K_GROUPS .. 'l:' .. key
                local stamp = num(math.max(now, g[11] or now))
                local stamps = {}
                for j = 1, share do
                    stamps[j] = stamp
                end
                redis.call('RPUSH', log, unpack(stamps))
                local length = g[10] + share
                if length > g[6] then
                    redis.call('LTRIM', log, -g[6], -1)
                    length = g[6]
                end
                if length >= g[6] then  -- full: its turn comes when the window frees
                    turn = math.max(turn, (tonumber(redis.call('LINDEX', log, 0)) or now) + g[7])
                end
                fields[#fields + 1] = 'ln'
                fields[#fields + 1] = int(length)
                fields[#fields + 1] = 'ls'
                fields[#fields + 1] = stamp
            end
            fields[4] = num(turn)
            redis.call('HSET', record, unpack(fields))
            room = g[4] == 0 or g[5] + share < g[4]
        elseif g[4] > 0 and g[5] >= g[4] then
            room = false  -- full (its limit was lowered): it comes back when a job leaves
        elseif g[8] > now then
            turn = math.max(g[8], g[12])
        elseif g[2] == 0 and queued > 0 and g[6] > 0 then  -- its rate window is full
            local recent = redis.call('LRANGE', K_GROUPS .. 'l:' .. key, -g[6], -g[6])
            turn = math.max(now, (tonumber(recent[1]) or now) + g[7])
        end
        if turn and share == 0 then
            redis.call('HSET', record, 't', num(turn))
        end
        if queued == 0 or not room then
            unringed[#unringed + 1] = key
        elseif turn then
            ringed[#ringed + 1] = ring_score(turn)
            ringed[#ringed + 1] = key
        end
        if queued == 0 and share == 0 and g[5] == 0 then  -- ringed with nothing (not expected)
            local v = redis.call('HMGET', record, 'l', 'b')
            group_idle(key, v[1], v[2], now)
        end
    end
    for i = 1, #ringed, 1000 do  -- unpack() is limited by Lua's stack: 1000 at a time
        redis.call('ZADD', K_RING, unpack(ringed, i, math.min(i + 999, #ringed)))
    end
    for i = 1, #unringed, 500 do
        redis.call('ZREM', K_RING, unpack(unringed, i, math.min(i + 499, #unringed)))
    end
    -- The ids in the order served: round by round.
    local round = 1
    while #ids < total do
        for i = 1, #groups do
            local id = popped[i][round]
            if id then
                ids[#ids + 1] = id
            end
        end
        round = round + 1
        if round > n then
            break
        end
    end
    return ids, group_of
end

-- The order keys {priority, run at µs, seq, id} of the next job of each of the first ``n``
-- groups whose turn has come: what a fetch of several queues weighs against the others.
local function peek_groups(n, now)
    local out = {}
    local keys = redis.call('ZRANGEBYSCORE', K_RING, '-inf', ring_score(now), 'LIMIT', 0, n)
    for _, key in ipairs(keys) do
        local first = redis.call('ZRANGE', K_GROUPS .. ':' .. key, 0, 0, 'WITHSCORES')
        if first[1] then
            local m = first[1]
            out[#out + 1] = {first[2], string.sub(m, 1, 16), string.sub(m, 17, 32),
                string.sub(m, 33)}
        end
    end
    return out
end
