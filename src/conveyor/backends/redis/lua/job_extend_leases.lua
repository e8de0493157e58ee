-- job_extend_leases: renew the leases a worker holds on jobs of one queue.
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
-- ARGV[2] lease_seconds
-- ARGV[3..] id, token pairs
-- Returns: per pair, in order: 0 extended, 1 extended and a cancel was requested, 2 lost (the
-- job is gone, no longer active, or leased with another token).
-- Guarantees: atomic; only a lease held with its current token is extended.

--!include common.lua
--!include keys.lua

local now = clock(ARGV[1])
local expires = num(now + tonumber(ARGV[2]))
local out = {}
for i = 3, #ARGV, 2 do
    local id = ARGV[i]
    local key = K_JOBS .. id
    local v = redis.call('HMGET', key, 's', 't', 'q', 'c')
    if v[1] ~= 'active' or v[2] ~= ARGV[i + 1] then
        out[#out + 1] = 2
    else
        redis.call('HSET', key, 'x', expires)
        redis.call('ZADD', K_ACTIVE, expires, smember(tonum(v[3], 0), id))
        if v[4] then
            out[#out + 1] = 1
        else
            out[#out + 1] = 0
        end
    end
end
return out
