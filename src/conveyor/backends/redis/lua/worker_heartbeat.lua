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
-- Returns: 1.
-- Guarantees: atomic; expired registrations are removed on the way.

--!include common.lua

local now = clock(ARGV[1])
local id = ARGV[3]
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', num(now))
for _, gone in ipairs(expired) do
    redis.call('HDEL', KEYS[2], gone)
    redis.call('ZREM', KEYS[3], gone)
end
for i = 1, #expired, 500 do  -- unpack() is limited by Lua's stack: 500 at a time
    redis.call('ZREM', KEYS[1], unpack(expired, i, math.min(i + 499, #expired)))
end
if redis.call('ZSCORE', KEYS[3], id) == false then
    local last = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')
    local n = 1
    if last[2] then
        n = tonumber(last[2]) + 1
    end
    redis.call('ZADD', KEYS[3], int(n), id)
end
local info = string.gsub(ARGV[4], '{last_seen_at}', num(now))
redis.call('HSET', KEYS[2], id, info)
redis.call('ZADD', KEYS[1], num(now + tonumber(ARGV[2])), id)
return 1
