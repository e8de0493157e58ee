-- job_purge: delete up to chunk jobs of one state of one queue (the caller repeats until
-- nothing is left, so no single call blocks the server for long).
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
-- ARGV[1] state: queued, scheduled, retrying, active, completed, failed or cancelled
-- ARGV[2] finished_before: epoch seconds ('' for any); only jobs finished before it are deleted
-- ARGV[3] chunk: most jobs to delete in this call
-- Returns: {jobs deleted, entries removed}: the caller repeats while a full chunk of entries was
-- removed (an entry whose job hash was already gone deletes no job).
-- Guarantees: atomic per call.

--!include keys.lua

local state = ARGV[1]
local chunk = tonumber(ARGV[3])
local deleted = 0

if state == 'queued' then
    local ids = redis.call('LPOP', K_READY, chunk) or {}
    for _, id in ipairs(ids) do
        deleted = deleted + redis.call('DEL', K_JOBS .. id)
    end
    local removed = #ids
    if removed < chunk then
        local popped = redis.call('ZPOPMIN', K_QUEUED, chunk - removed)
        for i = 1, #popped, 2 do
            deleted = deleted + redis.call('DEL', K_JOBS .. string.sub(popped[i], 33))
        end
        removed = removed + #popped / 2
    end
    if redis.call('LLEN', K_READY) == 0 then
        redis.call('HDEL', K_META, 'tr', 'tq')  -- the ready list is empty: any job may append
    end
    return {deleted, removed}
end

local set = state_set(state)
local members
if ARGV[2] == '' then
    members = redis.call('ZRANGE', set, 0, chunk - 1)
else
    members = redis.call('ZRANGEBYSCORE', set, '-inf', '(' .. ARGV[2], 'LIMIT', 0, chunk)
end
for _, member in ipairs(members) do
    redis.call('ZREM', set, member)
    deleted = deleted + redis.call('DEL', K_JOBS .. string.sub(member, 17))
end
return {deleted, #members}
