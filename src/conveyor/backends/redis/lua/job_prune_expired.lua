-- job_prune_expired: delete finished jobs of one queue whose own retention expired (the first
-- step of job_prune_finished), as chosen by the caller: earliest expiry first across queues.
--
-- KEYS[1] jobs: prefix of the queue's job hashes (job key = prefix .. id)
-- KEYS[2] expiring: zset of finished jobs with a retention of their own, score its expiry
-- KEYS[3] completed: zset of completed jobs
-- KEYS[4] failed: zset of failed jobs
-- KEYS[5] completed_by_seq: listing index of completed jobs
-- KEYS[6] failed_by_seq: listing index of failed jobs
-- KEYS[7] dedup: hash of dedup key -> the record of the job holding it (see dedup.lua)
-- KEYS[8] dedup_jobs: hash of job id -> the dedup key it took
-- ARGV[1] now: epoch seconds, or '' for the server clock
-- ARGV[2..] members of ``expiring`` to delete the jobs of
-- Returns: how many jobs were deleted; or an error reply, having written nothing, when an
-- argument is invalid.
-- Guarantees: atomic; only members still in ``expiring`` are considered, and a job is deleted
-- only while it is completed or failed with an expiry (ex) at or before ``now``, with the dedup
-- record it holds; an entry whose job has moved on is dropped.

local K_JOBS = KEYS[1]
local K_EXPIRING = KEYS[2]
local K_COMPLETED = KEYS[3]
local K_FAILED = KEYS[4]
local K_COMPLETED_BY_SEQ = KEYS[5]
local K_FAILED_BY_SEQ = KEYS[6]
local K_DEDUP = KEYS[7]
local K_DEDUP_JOBS = KEYS[8]

--!include common.lua
--!include args.lua
--!include members.lua
--!include dedup.lua

local given_now = now_arg(1)
if #ARGV > MAX_BATCH + 1 then
    refuse(#ARGV, 'too many members')
end
local bad = refused('job_prune_expired')
if bad then
    return bad
end

local now = clock(given_now)
local deleted = 0
for i = 2, #ARGV do
    local entry = ARGV[i]
    if redis.call('ZREM', K_EXPIRING, entry) == 1 then
        local id = string.sub(entry, 17)
        local key = K_JOBS .. id
        local v = redis.call('HMGET', key, 's', 'ex', 'q')
        local expires = tonumber(v[2])
        if expires and expires <= now and (v[1] == 'completed' or v[1] == 'failed') then
            local set, by_seq = K_COMPLETED, K_COMPLETED_BY_SEQ
            if v[1] == 'failed' then
                set, by_seq = K_FAILED, K_FAILED_BY_SEQ
            end
            redis.call('ZREM', set, smember(tonum(v[3], 0), id))
            redis.call('ZREM', by_seq, id)
            redis.call('DEL', key)
            forget_dedup({id}, 1, 1)
            deleted = deleted + 1
        end
    end
end
return deleted
