-- group_wait: how long until the first group of a queue that waits only for time may start a
-- job.
--
-- KEYS[1] ring: zset of the groups with queued jobs and room, score their turn
-- KEYS[2] meta: the queue's meta hash (its paused flag)
-- KEYS[3] group_records: hash of group key -> its record (see groups.lua; the record has the
--         exact turn, the ring scores it in whole microseconds)
-- ARGV[1] now: epoch seconds, or '' for the server clock
-- Returns: the seconds until the earliest turn after now in the ring ('' when there is none):
-- the group whose rate window frees or whose block ends first; '' for a paused queue (its
-- resume wakes workers). An error reply when an argument is invalid.
-- Guarantees: reads one entry of the ring; writes nothing.

local K_RING = KEYS[1]
local K_META = KEYS[2]
local K_GROUP_RECORDS = KEYS[3]

--!include common.lua
--!include args.lua

local given_now = now_arg(1)
if #ARGV ~= 1 then
    refuse(#ARGV, 'expected 1 argument')
end
local bad = refused('group_wait')
if bad then
    return bad
end

if redis.call('HGET', K_META, 'paused') == '1' then
    return ''
end
local now = clock(given_now)
local bound = string.format('(%d', math.floor(now * 1000000 + 0.5))
-- Below +inf: the ring's sentinel is no group (see groups.lua).
local first = redis.call('ZRANGEBYSCORE', K_RING, bound, '(+inf', 'WITHSCORES', 'LIMIT', 0, 1)
if first[2] then
    local text = redis.call('HGET', K_GROUP_RECORDS, first[1]) or ''
    local turn = tonumber(string.match(text, '^[^,]*,[^,]*,[^,]*,[^,]*,([^,]*),') or '')
    return num(math.max((turn or tonumber(first[2]) / 1000000) - now, 0))
end
return ''
