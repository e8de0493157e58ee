-- job_retry_many: move failed and cancelled jobs of one queue back to queued, with one more
-- attempt allowed.
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
-- ARGV[2..] job ids
-- Returns: per id, in order, {status, state}: status 'ok' (now queued), 'wrong_state' or
-- 'not_found'.
-- Guarantees: atomic; a retried job gets a new sequence number (it lists as new), runs at
-- now, keeps its last error, has no stalls or pending cancel, and wakes one idle worker.

--!include common.lua
--!include keys.lua
--!include wake.lua
--!include run_at.lua
--!include place.lua
--!include seq.lua

local now = clock(ARGV[1])
local out = {}
local woken = false
for i = 2, #ARGV do
    local id = ARGV[i]
    local key = K_JOBS .. id
    local v = redis.call('HMGET', key, 's', 'q', 'p', 'a')
    local state = v[1]
    if not state then
        out[#out + 1] = {'not_found', ''}
    elseif state == 'failed' or state == 'cancelled' then
        redis.call('ZREM', state_set(state), smember(tonum(v[2], 0), id))
        local seq = next_seq(1)
        local attempt = tonum(v[4], 0)
        redis.call('HDEL', key, 'f', 'k', 'c', 't', 'x', 'w')
        move_run_at(key, when(now))
        redis.call('HSET', key, 's', 'queued', 'm', int(attempt + 1), 'q', int(seq))
        place(id, tonum(v[3], 0), now, seq)
        woken = true
        out[#out + 1] = {'ok', 'queued'}
    else
        out[#out + 1] = {'wrong_state', state}
    end
end
settle(woken)
return out
