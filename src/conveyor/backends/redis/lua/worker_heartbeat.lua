-- worker_heartbeat: register a worker, or refresh its registration, until ``ttl`` from now.
--
-- KEYS[1] workers: zset of worker ids, score the expiry of their registration
-- KEYS[2] info: hash of worker id -> the worker's description (JSON, written by the caller)
-- KEYS[3] order: zset of worker id -> registration number (lists workers started at the same
--         moment in the order they registered)
-- ARGV[1] now: epoch seconds, or '' for the server clock
-- ARGV[2] ttl: seconds the registration lasts
-- ARGV[3] id
-- ARGV[4] info: the description, with ``last_seen_at`` still to be filled in by this script
--         (the text '{last_seen_at}')
-- Returns: 1; or an error reply, having written nothing, when an argument is invalid.
-- Guarantees: atomic; expired registrations are removed on the way.

local K_WORKERS = KEYS[1]
local K_INFO = KEYS[2]
local K_ORDER = KEYS[3]

--!include common.lua
--!include args.lua

local given_now = now_arg(1)
local ttl = number_arg(2, 0, MAX_SECONDS, false, 'ttl must be seconds from 0 to 3153600000')
if #ARGV ~= 4 then
    refuse(#ARGV, 'expected 4 arguments')
end
local bad = refused('worker_heartbeat')
if bad then
    return bad
end

local now = clock(given_now)
local id = ARGV[3]
local expired = redis.call('ZRANGEBYSCORE', K_WORKERS, '-inf', num(now))
for _, gone in ipairs(expired) do
    redis.call('HDEL', K_INFO, gone)
    redis.call('ZREM', K_ORDER, gone)
end
for i = 1, #expired, 500 do  -- unpack() is limited by Lua's stack: 500 at a time
    redis.call('ZREM', K_WORKERS, unpack(expired, i, math.min(i + 499, #expired)))
end
if redis.call('ZSCORE', K_ORDER, id) == false then
    local last = redis.call('ZRANGE', K_ORDER, -1, -1, 'WITHSCORES')
    local n = 1
    if last[2] then
        n = tonumber(last[2]) + 1
    end
    redis.call('ZADD', K_ORDER, int(n), id)
end
local info = string.gsub(ARGV[4], '{last_seen_at}', num(now))
redis.call('HSET', K_INFO, id, info)
redis.call('ZADD', K_WORKERS, num(now + ttl), id)
return 1
