-- job_rescue_expired: give back, fail or cancel chosen active jobs of one queue whose lease ran
-- out (the caller picks them across queues, oldest lease first).
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
-- ARGV[2] max_stalls
-- ARGV[3] stalled_error: error of a job failed for stalling; '{stalls}' stands for the count
-- ARGV[4] cancelled_error: error of a job lost while a cancel was pending
-- ARGV[5..] members of the active set to rescue
-- Returns: per member, in order: 'requeued', 'failed', 'cancelled' or 'skipped' (no longer
-- active, or its lease was renewed meanwhile).
-- Guarantees: atomic; a job whose lease has not expired at ``now`` is left alone; a requeued
-- job gets its attempt back, counts a stall, runs at ``now`` and wakes one idle worker.

--!include common.lua
--!include keys.lua
--!include wake.lua
--!include run_at.lua
--!include place.lua

local now = clock(ARGV[1])
local max_stalls = tonumber(ARGV[2])
local out = {}
local woken = false

for i = 5, #ARGV do
    local member = ARGV[i]
    local score = redis.call('ZSCORE', K_ACTIVE, member)
    local id = string.sub(member, 17)
    local key = K_JOBS .. id
    local v = redis.call('HMGET', key, 's', 'k', 'c', 'a', 'p', 'q')
    if not score or tonumber(score) > now or v[1] ~= 'active' then
        if score and v[1] ~= 'active' then
            redis.call('ZREM', K_ACTIVE, member)  -- a stale member: its job moved on or is gone
        end
        out[#out + 1] = 'skipped'
    else
        redis.call('ZREM', K_ACTIVE, member)
        local stalls = tonum(v[2], 0) + 1
        local seq = tonum(v[6], 0)
        redis.call('HDEL', key, 't', 'x', 'w', 'c')
        if v[3] or stalls > max_stalls then
            local state, err = 'cancelled', ARGV[4]
            if not v[3] then
                state = 'failed'
                err = string.gsub(ARGV[3], '{stalls}', int(stalls))
            end
            redis.call('HDEL', key, 'res')
            redis.call('HSET', key, 's', state, 'f', num(now), 'k', int(stalls), 'err', err)
            redis.call('ZADD', state_set(state), num(now), smember(seq, id))
            out[#out + 1] = state
        else
            local attempt = math.max(tonum(v[4], 0) - 1, 0)
            move_run_at(key, when(now))
            redis.call('HSET', key, 's', 'queued', 'k', int(stalls), 'a', int(attempt))
            place(id, tonum(v[5], 0), now, seq)
            woken = true
            out[#out + 1] = 'requeued'
        end
    end
end
settle(woken)
return out
