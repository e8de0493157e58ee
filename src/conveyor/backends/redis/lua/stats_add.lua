-- stats_add: add per-minute throughput counts to one queue's buckets, and drop the buckets
-- that became too old since the last add.
--
-- KEYS[1] stats: hash of the queue's buckets: fields '<minute>:c', '<minute>:r', '<minute>:f'
--         (attempts completed, retried and failed in that minute, epoch seconds // 60; a
--         bucket is the fields of its minute), and 'pruned', a minute no bucket is older than
-- ARGV[1] now: epoch seconds, or '' for the server clock
-- ARGV[2] keep: minutes a bucket is kept (conveyor.drivers.common.STATS_KEEP_MINUTES)
-- ARGV[3] n: number of samples; then 4 arguments per sample: minute, completed, retried,
--         failed (whole numbers below 2**53)
-- Returns: {buckets written, fields deleted}; or an error reply, having written nothing, when
-- an argument is invalid.
-- Guarantees: atomic. A bucket older than ``keep`` minutes before ``now`` (minute < now // 60
-- - keep) is deleted by the first add at or after that ``now``, and a sample that old is not
-- written. Each add deletes only the minutes that became old since the last one ('pruned' to
-- the oldest kept): work bounded by the minutes elapsed, and by the hash's size when that is
-- smaller (a long pause between adds). The hash expires, relative to ``now`` rather than the
-- server's wall clock, once its newest bucket is too old: a queue whose workers stopped
-- leaves nothing behind.

local K_STATS = KEYS[1]

--!include common.lua
--!include args.lua

local PER_SAMPLE = 4
local MAX_COUNT = 9007199254740991  -- below 2**53, as check_stats: exact in a Lua number
local given_now = now_arg(1)
local keep = number_arg(2, 0, 1000000, true, 'keep must be whole minutes from 0 to 1000000')
local n = tonumber(ARGV[3])
if not (n and n % 1 == 0 and n >= 0 and n <= MAX_BATCH and #ARGV == 3 + PER_SAMPLE * n) then
    refuse(3, 'the sample count must say how many samples of 4 arguments follow')
    n = 0
end
for i = 0, n - 1 do
    local base = 4 + i * PER_SAMPLE
    number_arg(base, 0, MAX_COUNT, true, 'a minute must be a whole number from 0, below 2**53')
    for k = base + 1, base + 3 do
        number_arg(k, 0, MAX_COUNT, true, 'a count must be a whole number from 0, below 2**53')
    end
end
local bad = refused('stats_add')
if bad then
    return bad
end

local now = clock(given_now)
local oldest = math.floor(now / 60) - keep
local pruned = tonumber(redis.call('HGET', K_STATS, 'pruned'))
local deleted = 0

-- Delete the fields of ``fields`` (a list), 500 at a time (unpack() is limited by the stack).
local function hdel(fields)
    for i = 1, #fields, 500 do
        local j = math.min(i + 499, #fields)
        deleted = deleted + redis.call('HDEL', K_STATS, unpack(fields, i, j))
    end
end

if pruned == nil or pruned < oldest then
    local size = redis.call('HLEN', K_STATS)
    local old = {}
    if size > 0 and (pruned == nil or 3 * (oldest - pruned) > size) then
        -- No marker (a hash written by someone else), or fewer fields than minutes to try.
        for _, field in ipairs(redis.call('HKEYS', K_STATS)) do
            local minute = tonumber(string.match(field, '^(%d+):'))
            if minute and minute < oldest then
                old[#old + 1] = field
            end
        end
    elseif size > 0 then
        for minute = pruned, oldest - 1 do
            local m = int(minute)
            old[#old + 1] = m .. ':c'
            old[#old + 1] = m .. ':r'
            old[#old + 1] = m .. ':f'
        end
    end
    hdel(old)
    if size > 0 then
        pruned = oldest
        redis.call('HSET', K_STATS, 'pruned', int(pruned))
    else
        pruned = nil  -- nothing held: the first bucket written sets the marker
    end
end

local written, newest, lowest = 0, nil, nil
for i = 0, n - 1 do
    local base = 4 + i * PER_SAMPLE
    local minute = tonumber(ARGV[base])
    if minute >= oldest then
        local m = int(minute)
        local c, r, f = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
        if c > 0 or (r == 0 and f == 0) then  -- an empty sample still makes its bucket
            redis.call('HINCRBY', K_STATS, m .. ':c', ARGV[base + 1])
        end
        if r > 0 then
            redis.call('HINCRBY', K_STATS, m .. ':r', ARGV[base + 2])
        end
        if f > 0 then
            redis.call('HINCRBY', K_STATS, m .. ':f', ARGV[base + 3])
        end
        written = written + 1
        newest = math.max(newest or minute, minute)
        lowest = math.min(lowest or minute, minute)
    end
end

if written > 0 then
    if pruned == nil or lowest < pruned then  -- a clock that went back: still a lower bound
        redis.call('HSET', K_STATS, 'pruned', int(lowest))
    end
    -- Kept until the newest bucket is too old, counted from ``now``, never shortened (and at
    -- most a century: a minute far ahead must not overflow PEXPIRE).
    local ttl = math.min((newest + keep + 1) * 60000 - math.floor(now * 1000),
        MAX_SECONDS * 1000)
    local left = redis.call('PTTL', K_STATS)
    if left < ttl then
        redis.call('PEXPIRE', K_STATS, int(ttl))
    end
end
return {written, deleted}
