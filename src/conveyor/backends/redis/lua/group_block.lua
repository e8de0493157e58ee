-- group_block: start no job of one group of a queue before now + seconds (a grouped job's
-- handler met an upstream limit).
--
-- KEYS[1] groups: prefix of the keys of the queue's groups (see groups.lua)
-- KEYS[2] ring: zset of the groups with queued jobs and room, score their turn
-- KEYS[3] group_idle: zset of the groups that hold no job, score when their record may go
-- KEYS[4] group_records: hash of group key -> its record (see groups.lua)
-- KEYS[5] meta: the queue's meta hash (not written here: groups.lua's helpers need it)
-- ARGV[1] now: epoch seconds, or '' for the server clock
-- ARGV[2] group: the group's key
-- ARGV[3] seconds: how long to block, from 0 to 86400
-- Returns: the time the group is blocked until (a later block already recorded stands). An
-- error reply, having written nothing, when an argument is invalid.
-- Guarantees: atomic; a block never shortens one already recorded; the group's turn is not
-- before its block ends (in the ring too); a group without a record gets one, with no limits,
-- so that the block holds the jobs that arrive later, and the record is not pruned before the
-- block ends. Other groups and plain jobs are not held.

local K_GROUPS = KEYS[1]
local K_RING = KEYS[2]
local K_GROUP_IDLE = KEYS[3]
local K_GROUP_RECORDS = KEYS[4]
local K_META = KEYS[5]

--!include common.lua
--!include args.lua
--!include members.lua
--!include groups.lua

local given_now = now_arg(1)
if ARGV[2] == '' or #ARGV[2] > 2048 or string.find(ARGV[2], '%z') then
    refuse(2, 'the group key must be 1 to 512 characters without NUL')
end
local seconds = number_arg(3, 0, 86400, false, 'seconds must be from 0 to 86400')
if #ARGV ~= 3 then
    refuse(#ARGV, 'expected 3 arguments')
end
local bad = refused('group_block')
if bad then
    return bad
end

local now = clock(given_now)
group_now = now
local key = ARGV[2]
local r = group_record(redis.call('HGET', K_GROUP_RECORDS, key))
local new = r == nil
r = r or group_new('0,0,0', now)
r.b = math.max(now + seconds, r.b or 0)
r.t = math.max(r.t, r.b)
redis.call('HSET', K_GROUP_RECORDS, key, group_text(r))
if redis.call('ZSCORE', K_RING, key) then
    redis.call('ZADD', K_RING, ring_score(r.t), key)
end
local idle = tonumber(redis.call('ZSCORE', K_GROUP_IDLE, key))
if new or (idle and idle < r.b) then
    -- New, or holding no job: its record stays until the block ends.
    redis.call('ZADD', K_GROUP_IDLE, num(r.b), key)
end
return num(r.b)
