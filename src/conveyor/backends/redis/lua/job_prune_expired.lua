-- job_prune_expired: delete the finished jobs of one queue whose own retention expired (the
-- first step of job_prune_finished).
--
-- KEYS[1] jobs: prefix of the queue's job hashes (job key = prefix .. id)
-- KEYS[2] expiring: zset of finished jobs with a retention of their own, score its expiry
-- KEYS[3] completed: zset of completed jobs
-- KEYS[4] failed: zset of failed jobs
-- KEYS[5] completed_by_seq: listing index of completed jobs
-- KEYS[6] failed_by_seq: listing index of failed jobs
-- ARGV[1] now: epoch seconds, or '' for the server clock
-- ARGV[2] limit: at most this many entries are read (0 to 10000)
-- Returns: how many jobs were deleted; or an error reply, having written nothing, when an
-- argument is invalid.
-- Guarantees: atomic; reads only the entries due by ``now``, earliest first, at most ``limit``.
-- A job is deleted only while it is completed or failed with an expiry (ex) at or before
-- ``now``; an entry whose job moved on (retried, purged, pruned by count) is dropped.

local K_JOBS = KEYS[1]
local K_EXPIRING = KEYS[2]
local K_COMPLETED = KEYS[3]
local K_FAILED = KEYS[4]
local K_COMPLETED_BY_SEQ = KEYS[5]
local K_FAILED_BY_SEQ = KEYS[6]

--!include common.lua
--!include args.lua
--!include members.lua

local given_now = now_arg(1)
local limit = number_arg(2, 0, 10000, true, 'limit must be a whole number from 0 to 10000')
if #ARGV ~= 2 then
    refuse(#ARGV, 'expected 2 arguments')
end
local bad = refused('job_prune_expired')
if bad then
    return bad
end

local now = clock(given_now)
local deleted = 0
if limit == 0 then
    return 0
end
local due = redis.call('ZRANGEBYSCORE', K_EXPIRING, '-inf', num(now), 'LIMIT', 0, limit)
for _, entry in ipairs(due) do
    local id = string.sub(entry, 17)
    local key = K_JOBS .. id
    redis.call('ZREM', K_EXPIRING, entry)
    local v = redis.call('HMGET', key, 's', 'ex', 'q')
    local expires = tonumber(v[2])
    if expires and expires <= now and (v[1] == 'completed' or v[1] == 'failed') then
        local member = smember(tonum(v[3], 0), id)
        local set, by_seq = K_COMPLETED, K_COMPLETED_BY_SEQ
        if v[1] == 'failed' then
            set, by_seq = K_FAILED, K_FAILED_BY_SEQ
        end
        redis.call('ZREM', set, member)
        redis.call('ZREM', by_seq, id)
        redis.call('ZREM', K_EXPIRING, member)
        redis.call('DEL', key)
        deleted = deleted + 1
    end
end
return deleted
