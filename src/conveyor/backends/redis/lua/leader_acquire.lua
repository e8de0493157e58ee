-- leader_acquire: take or renew a named leadership.
--
-- KEYS[1] leader: hash of the leadership: h holder, x expiry
-- ARGV[1] now: epoch seconds, or '' for the server clock
-- ARGV[2] ttl: seconds the leadership lasts from now
-- ARGV[3] holder
-- Returns: 1 if ``holder`` holds it now, else 0; or an error reply, having written nothing,
-- when an argument is invalid.
-- Guarantees: atomic; at most one holder at a time; a holder keeps it by renewing before it
-- expires; anyone may take it once it has expired.

local K_LEADER = KEYS[1]

--!include common.lua
--!include args.lua

local given_now = now_arg(1)
local ttl = number_arg(2, 0, MAX_SECONDS, false, 'ttl must be seconds from 0 to 3153600000')
if #ARGV ~= 3 then
    refuse(#ARGV, 'expected 3 arguments')
end
local bad = refused('leader_acquire')
if bad then
    return bad
end

local now = clock(given_now)
local v = redis.call('HMGET', K_LEADER, 'h', 'x')
if v[1] == false or v[1] == ARGV[3] or tonum(v[2], 0) <= now then
    redis.call('HSET', K_LEADER, 'h', ARGV[3], 'x', num(now + ttl))
    return 1
end
return 0
