-- group_prune: delete the records of idle groups of one queue.
--
-- KEYS[1] groups: prefix of the keys of the queue's groups (see groups.lua)
-- KEYS[2] ring: zset of the groups with queued jobs and room, score their turn
-- KEYS[3] group_idle: zset of the groups that hold no job, score when their record may go
-- KEYS[4] group_records: hash of group key -> its record (see groups.lua)
-- KEYS[5] meta: the queue's meta hash (not written here: groups.lua's helpers need it)
-- ARGV[1] now: epoch seconds, or '' for the server clock
-- ARGV[2] limit: most records to delete
-- Returns: how many group records were deleted. An error reply, having written nothing, when an
-- argument is invalid.
-- Guarantees: atomic; deletes only the record and rate log of a group with no queued and no
-- active job whose block has ended and whose rate window has passed; a group due in the idle
-- set that is not idle after all leaves it (or is put back for when it may go). Reads at most
-- ``limit`` entries of the idle set.

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
if #ARGV ~= 2 then
    refuse(#ARGV, 'expected 2 arguments')
end
local limit = number_arg(2, 0, MAX_BATCH, true, 'limit must be a whole number from 0')
local bad = refused('group_prune')
if bad then
    return bad
end

local now = clock(given_now)
if limit == 0 then
    return 0
end
local deleted = 0
for _, key in ipairs(redis.call('ZRANGEBYSCORE', K_GROUP_IDLE, '-inf', num(now), 'LIMIT', 0,
        limit)) do
    local r = group_record(redis.call('HGET', K_GROUP_RECORDS, key))
    if not r then
        redis.call('ZREM', K_GROUP_IDLE, key)
    elseif redis.call('ZCARD', K_GROUPS .. ':' .. key) > 0 or r.a > 0 then
        redis.call('ZREM', K_GROUP_IDLE, key)  -- busy again
    else
        if (r.b or 0) > now or (r.ls and r.ls + r.per > now) then
            group_idle(key, r, now)
        else
            redis.call('HDEL', K_GROUP_RECORDS, key)
            redis.call('DEL', K_GROUPS .. 'l:' .. key)
            redis.call('ZREM', K_GROUP_IDLE, key)
            redis.call('ZREM', K_RING, key)
            deleted = deleted + 1
        end
    end
end
return deleted
