-- Groups (see conveyor.drivers.groups): a grouped job waits in its group, not among the queue's
-- plain jobs (place.lua puts it there). Needs K_GROUPS, K_RING, K_GROUP_IDLE and K_META;
-- include common.lua and members.lua first.
--
-- The keys of group <key> are built from K_GROUPS ('{<prefix>:<queue>}:g'), so they share the
-- queue's hash tag (one Cluster slot) whatever the key holds:
--   K_GROUPS .. ':' .. key   its queued jobs, a zset scored and membered as the queued set
--                            (priority; run at, seq, id): ZPOPMIN takes the next in run order
--   K_GROUPS .. 'r:' .. key  its record, a hash: l the limits of the job placed in it last
--                            ('<concurrency>,<rate count>,<rate per>'), a its active jobs,
--                            t its turn, b the time a block holds it until
--   K_GROUPS .. 'l:' .. key  its rate log, start times oldest first (at most <rate count>)
-- K_RING holds the groups with queued jobs and room under their concurrency, scored by turn (in
-- whole microseconds: ring_score; the record's t is exact): a
-- fetch reads those whose turn has come, a few at a time, and never sees a full group or one
-- without jobs. K_GROUP_IDLE holds the groups with no queued or active job, scored by when
-- their record may go (their rate window and block passed): what pruning reads. A job hash
-- keeps its group's key (g) and limits (gl), so that any path that places it again restores
-- the group, record included. The meta hash's 'gq' counts the queue's grouped queued jobs.

local group_now = nil  -- the script's now, set before placing or leaving: a new record's turn
local group_seen = {}  -- key -> limits of the groups this call put in order already
local group_queued = 0  -- change of the grouped queued count not yet written to 'gq'
local group_leaving = {}  -- key -> jobs of the group that left ``active``, not yet counted

-- A time as the ring scores it: whole microseconds. A listpack-encoded sorted set (the ring of
-- up to 128 groups) compares integer scores without parsing them, which makes its updates
-- several times cheaper than with a float's text.
local function ring_score(at)
    return string.format('%d', math.floor(at * 1000000 + 0.5))
end

-- A record's limits text as numbers: concurrency, rate count, rate per (0: none).
local function group_limits(text)
    local c, count, per = string.match(text or '', '^(%d+),(%d+),([^,]+)$')
    return tonumber(c) or 0, tonumber(count) or 0, tonumber(per) or 0
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

-- Note that group ``key`` (whose record's limits and block are given) holds no job: its
-- record may go once its block and its rate window have passed.
local function group_idle(key, limits, blocked, now)
    local at = math.max(now, tonumber(blocked) or 0)
    local _, _, per = group_limits(limits)
    local last = tonumber(redis.call('LINDEX', K_GROUPS .. 'l:' .. key, -1) or '')
    if last then
        at = math.max(at, last + per)
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
-- call it before they place jobs again or return (group_flush does).
local function group_settle()
    local woken = false
    for key, left in pairs(group_leaving) do
        local record = K_GROUPS .. 'r:' .. key
        local v = redis.call('HMGET', record, 'l', 't', 'b')
        if v[2] then  -- else no record (a store written before groups): nothing was counted
            local active = redis.call('HINCRBY', record, 'a', -left)
            if active < 0 then
                redis.call('HSET', record, 'a', '0')
                active = 0
            end
            local concurrency = group_limits(v[1])
            local freed = concurrency > 0 and active + left >= concurrency and active < concurrency
            -- Only two steps matter: the group had been full, or now runs nothing.
            if freed or active == 0 then
                group_seen[key] = nil
                if redis.call('ZCARD', K_GROUPS .. ':' .. key) > 0 then
                    if freed then
                        redis.call('ZADD', K_RING, ring_score(tonumber(v[2]) or 0), key)
                        woken = woken or tonumber(v[2]) <= group_now
                    end
                else
                    group_idle(key, v[1], v[3], group_now)
                end
            end
        end
    end
    group_leaving = {}
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
        local v = redis.call('HMGET', K_GROUPS .. 'r:' .. key, 'l', 'a', 'b')
        if (tonumber(v[2]) or 0) == 0 then
            group_idle(key, v[1], v[3], now)
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
