-- rate_limit_block: start no job of the queue under its rate limit before now + seconds.
--
-- KEYS[1] rate_block: string, the time the queue is blocked until
-- ARGV[1] now: epoch seconds, or '' for the server clock
-- ARGV[2] seconds: how long to block, from 0 to 86400
-- Returns: the time the queue is blocked until (a later block already recorded stands). An
-- error reply, having written nothing, when an argument is invalid.
-- Guarantees: atomic; a block never shortens one already recorded.

local K_RATE_BLOCK = KEYS[1]

--!include common.lua
--!include args.lua

local given_now = now_arg(1)
local seconds = number_arg(2, 0, 86400, false, 'seconds must be from 0 to 86400')
if #ARGV ~= 2 then
    refuse(#ARGV, 'expected 2 arguments')
end
local bad = refused('rate_limit_block')
if bad then
    return bad
end

local blocked_until = clock(given_now) + seconds
local recorded = tonumber(redis.call('GET', K_RATE_BLOCK) or '')
if recorded and recorded >= blocked_until then
    return num(recorded)
end
redis.call('SET', K_RATE_BLOCK, num(blocked_until))
return num(blocked_until)
