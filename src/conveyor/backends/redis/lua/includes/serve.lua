-- Serving groups in a fetch (see conveyor.drivers.groups): the ring's groups whose turn has
-- come, in turn order (ties by key), one job per group per round, none beyond a group's room
-- under its concurrency or its rate. Needs what groups.lua needs; include groups.lua first.
--
-- Each group served costs two commands however many of its jobs it gets (its queued count and
-- one pop of its share; with a rate, one append to its log), and the fetch one read and one
-- write of all their records and one write of the ring. The record keeps its log's length and
-- newest stamp, so that a rate that does not bind costs no read of the log. Reads at most
-- ``n`` groups.

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
    -- log length, newest stamp, turn, record}
    local groups = {}
    for i, text in ipairs(group_texts(keys)) do
        local key = keys[i]
        local r = group_record(text) or group_new('0,0,0', now)
        local queued = redis.call('ZCARD', K_GROUPS .. ':' .. key)
        local cap = math.min(n, queued)
        if r.c > 0 then
            cap = math.min(cap, r.c - r.a)
        end
        if (r.b or 0) > now then
            cap = 0
        elseif r.count > 0 and cap > 0 then
            cap = group_allowance(K_GROUPS .. 'l:' .. key, r.ln, r.count, r.per, now, cap)
        end
        groups[i] = {key, cap, 0, r.c, r.a, r.count, r.per, r.b or 0, queued, r.ln, r.ls, r.t,
            r}
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
    local writes = {}  -- the records changed, sent in one HSET
    for i, g in ipairs(groups) do
        local key, share, r = g[1], g[3], g[13]
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
            r.a = g[5] + share
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
                r.ln, r.ls = length, tonumber(stamp)
            end
            room = g[4] == 0 or g[5] + share < g[4]
        elseif g[4] > 0 and g[5] >= g[4] then
            room = false  -- full (its limit was lowered): it comes back when a job leaves
        elseif g[8] > now then
            turn = math.max(g[8], g[12])
        elseif g[2] == 0 and queued > 0 and g[6] > 0 then  -- its rate window is full
            local recent = redis.call('LRANGE', K_GROUPS .. 'l:' .. key, -g[6], -g[6])
            turn = math.max(now, (tonumber(recent[1]) or now) + g[7])
        end
        if turn then
            r.t = turn
            writes[#writes + 1] = key
            writes[#writes + 1] = group_text(r)
        end
        if queued == 0 or not room then
            unringed[#unringed + 1] = key
        elseif turn then
            ringed[#ringed + 1] = ring_score(turn)
            ringed[#ringed + 1] = key
        end
        if queued == 0 and share == 0 and g[5] == 0 then  -- ringed with nothing (not expected)
            group_idle(key, r, now)
        end
    end
    group_write(writes)
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
