-- queue_notify: wake one idle worker of the queue.
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
-- Returns: 1.
-- Guarantees: at most one marker waits in the queue's wake list.

--!include keys.lua
--!include wake.lua

wake()
return 1
