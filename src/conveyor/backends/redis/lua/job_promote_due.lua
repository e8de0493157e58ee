-- job_promote_due: make chosen due scheduled and retrying jobs of one queue queued (the caller
-- picks them across queues, earliest run time first).
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
-- ARGV[1] now: epoch seconds, or '' for the server clock
-- ARGV[2..] pairs of set name ('scheduled' or 'retrying') and member
-- Returns: how many jobs moved.
-- Guarantees: atomic; a member no longer in its set or not yet due is left alone; moved jobs
-- wake one idle worker.

--!include common.lua
--!include keys.lua
--!include wake.lua
--!include place.lua
--!include promote.lua

local now = clock(ARGV[1])
local moved = 0
for i = 2, #ARGV, 2 do
    local set = state_set(ARGV[i])
    local score = redis.call('ZSCORE', set, ARGV[i + 1])
    if score and tonumber(score) <= now and promote_member(set, ARGV[i + 1]) then
        moved = moved + 1
    end
end
settle(moved > 0)
return moved
