-- job_prune_finished: delete finished jobs of one queue beyond the retention policy.
--
-- KEYS[1] jobs: prefix of the queue's job hashes (job key = prefix .. id)
-- KEYS[2] meta: the queue's meta hash
-- KEYS[3] ready: list of in-order priority-0 queued jobs
-- KEYS[4] queued: zset of the other queued jobs
-- KEYS[5] scheduled: zset of jobs waiting for their run time
-- KEYS[6] retrying: zset of jobs waiting to be retried
-- KEYS[7] active: zset of leased jobs
-- KEYS[8] completed: zset of completed jobs
-- KEYS[9] failed: zset of failed jobs
-- KEYS[10] cancelled: zset of cancelled jobs
-- KEYS[11] wake: list idle workers block on
-- ARGV[1] state: completed, failed or cancelled
-- ARGV[2] mode: 'members' (delete the members that follow, chosen by the caller oldest first
--         across queues) or 'trim' (delete the oldest beyond the newest ARGV[3] jobs, at most
--         ARGV[4] of them)
-- ARGV[3..] members, or keep and limit
-- Returns: how many jobs were deleted.
-- Guarantees: atomic; only members still in the state's set are deleted.

--!include keys.lua

local set = state_set(ARGV[1])
local deleted = 0
if ARGV[2] == 'trim' then
    local excess = math.min(redis.call('ZCARD', set) - tonumber(ARGV[3]), tonumber(ARGV[4]))
    if excess > 0 then
        local popped = redis.call('ZPOPMIN', set, excess)
        for i = 1, #popped, 2 do
            redis.call('DEL', K_JOBS .. string.sub(popped[i], 17))
            deleted = deleted + 1
        end
    end
    return deleted
end
for i = 3, #ARGV do
    if redis.call('ZREM', set, ARGV[i]) == 1 then
        redis.call('DEL', K_JOBS .. string.sub(ARGV[i], 17))
        deleted = deleted + 1
    end
end
return deleted
