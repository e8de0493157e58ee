-- Rate limits (see conveyor.drivers.rates): a queue's sliding log of start times, oldest first
-- (K_RATE_LOG, a list), and the time a handler's RateLimited blocked it until (K_RATE_BLOCK, a
-- string). Needs both keys, args.lua and common.lua.

local MAX_RATE_COUNT = 10000  -- as conveyor.drivers.rates.MAX_RATE_COUNT
local MAX_RATE_SECONDS = 86400  -- as conveyor.drivers.rates.MAX_RATE_SECONDS

-- ARGV[i] and ARGV[i + 1] as a limit's count and window in seconds; nil, nil when both are ''.
local function rate_args(i)
    if ARGV[i] == '' and ARGV[i + 1] == '' then
        return nil, nil
    end
    local count = number_arg(i, 1, MAX_RATE_COUNT, true,
        'rate_count must be a whole number from 1 to 10000')
    local per = number_arg(i + 1, 0, MAX_RATE_SECONDS, false,
        'rate_per must be seconds from 0 to 86400')
    if per == 0 then
        refuse(i + 1, 'rate_per must be more than 0 seconds')
    end
    return count, per
end

-- The time the queue is blocked until, or nil.
local function rate_blocked_until()
    return tonumber(redis.call('GET', K_RATE_BLOCK) or '')
end

-- How many of ``limit`` jobs may start at ``now``: none while blocked, else the free places of
-- the log's last ``count`` entries plus its oldest entries at least ``per`` old. Reads at most
-- ``limit`` entries; an entry unreadable only makes the answer smaller.
local function rate_allowed(now, count, per, limit)
    local blocked = rate_blocked_until()
    if blocked and blocked > now then
        return 0
    end
    local length = redis.call('LLEN', K_RATE_LOG)
    local skip = math.max(length - count, 0)
    local allowed = count - (length - skip)
    if allowed >= limit then
        return limit
    end
    -- The log is in order (a start is never stamped before the newest entry), so when the
    -- last of the entries needed is old enough, all before it are: one read instead of many.
    local needed = limit - allowed
    local last = tonumber(redis.call('LINDEX', K_RATE_LOG, skip + needed - 1) or '')
    if last and last + per <= now then
        return limit
    end
    for _, at in ipairs(redis.call('LRANGE', K_RATE_LOG, skip, skip + needed - 1)) do
        if (tonumber(at) or now) + per > now then
            break
        end
        allowed = allowed + 1
    end
    return math.min(allowed, limit)
end
