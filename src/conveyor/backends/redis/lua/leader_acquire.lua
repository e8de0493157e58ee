-- leader_acquire: take or renew a named leadership.
--
-- KEYS[1] leader: hash of the leadership: h holder, x expiry
-- ARGV[1] now: epoch seconds, or '' for the server clock
-- ARGV[2] ttl: seconds the leadership lasts from now
-- ARGV[3] holder
-- Returns: 1 if ``holder`` holds it now, else 0.
-- Guarantees: atomic; at most one holder at a time; a holder keeps it by renewing before it
-- expires; anyone may take it once it has expired.

--!include common.lua

local now = clock(ARGV[1])
local v = redis.call('HMGET', KEYS[1], 'h', 'x')
if v[1] == false or v[1] == ARGV[3] or tonum(v[2], 0) <= now then
    redis.call('HSET', KEYS[1], 'h', ARGV[3], 'x', num(now + tonumber(ARGV[2])))
    return 1
end
return 0
