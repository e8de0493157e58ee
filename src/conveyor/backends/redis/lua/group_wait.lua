-- group_wait: how long until the first group of a queue that waits only for time may start a
-- job.
--
-- KEYS[1] ring: zset of the groups with queued jobs and room, score their turn
-- KEYS[2] meta: the queue's meta hash (its paused flag)
-- KEYS[3] group_records: hash of group key -> its record (see groups.lua; the record has the
--         exact turn, the ring scores it in whole microseconds)
-- ARGV[1] now: epoch seconds, or '' for the server clock
-- ARGV[2..] names: only groups of these job names count (none: every group). A group's key
--           starts with its job's name and ':' (the engine builds it so: one name per group).
-- Returns: the seconds until the earliest turn after now in the ring ('' when there is none):
-- the group whose rate window frees or whose block ends first; '' for a paused queue (its
-- resume wakes workers). An error reply when an argument is invalid.
-- Guarantees: writes nothing; reads one entry of the ring without names, and at most SCAN
-- entries with them (past those, the first entry's wait is returned: a waiting worker then
-- wakes early, never late).

local K_RING = KEYS[1]
local K_META = KEYS[2]
local K_GROUP_RECORDS = KEYS[3]

--!include common.lua
--!include args.lua

local SCAN = 1000

local given_now = now_arg(1)
for i = 2, #ARGV do
    if ARGV[i] == '' then
        refuse(i, 'a name must not be empty')
    end
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

-- Whether group ``key`` is of one of the names asked for.
local function wanted(key)
    if #ARGV < 2 then
        return true
    end
    for i = 2, #ARGV do
        if string.sub(key, 1, #ARGV[i] + 1) == ARGV[i] .. ':' then
            return true
        end
    end
    return false
end

-- Below +inf: the ring's sentinel is no group (see groups.lua).
local found = nil
local first = nil
local offset = 0
while not found and offset < SCAN do
    local page = redis.call('ZRANGEBYSCORE', K_RING, bound, '(+inf', 'LIMIT', offset, 100)
    for _, key in ipairs(page) do
        first = first or key
        if wanted(key) then
            found = key
            break
        end
    end
    if #page < 100 then
        break
    end
    offset = offset + 100
end
found = found or (offset >= SCAN and first)
if not found then
    return ''
end
local text = redis.call('HGET', K_GROUP_RECORDS, found) or ''
local turn = tonumber(string.match(text, '^[^,]*,[^,]*,[^,]*,[^,]*,([^,]*),') or '')
if not turn then
    turn = tonumber(redis.call('ZSCORE', K_RING, found)) / 1000000
end
return num(math.max(turn - now, 0))
