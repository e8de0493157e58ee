-- rate_limit_wait: how long until the queue's rate limit lets a job start.
--
-- KEYS[1] rate_log: list of the start times of the queue's last starts, oldest first
-- KEYS[2] rate_block: string, the time a handler's RateLimited blocked the queue until
-- ARGV[1] now: epoch seconds, or '' for the server clock
-- ARGV[2] rate_count: most starts in any window of ARGV[3] seconds
-- ARGV[3] rate_per: the window, seconds
-- Returns: '' when a job may start at now, else the seconds until one may (the oldest of the
-- last ARGV[2] starts leaves the window, or the block ends, whichever is later). An error
-- reply when an argument is invalid.
-- Guarantees: reads only; reads at most two entries of the log.

local K_RATE_LOG = KEYS[1]
local K_RATE_BLOCK = KEYS[2]

--!include common.lua
--!include args.lua
--!include rates.lua

local given_now = now_arg(1)
local count, per = rate_args(2)
if not count then
    refuse(2, 'rate_count and rate_per are needed')
end
if #ARGV ~= 3 then
    refuse(#ARGV, 'expected 3 arguments')
end
local bad = refused('rate_limit_wait')
if bad then
    return bad
end

local now = clock(given_now)
if rate_allowed(now, count, per, 1) > 0 then
    return ''
end
local free_at = now
local length = redis.call('LLEN', K_RATE_LOG)
if length >= count then
    free_at = (tonumber(redis.call('LINDEX', K_RATE_LOG, length - count)) or now) + per
end
local blocked = rate_blocked_until() or now
return num(math.max(free_at, blocked) - now)
