-- job_cancel_many: cancel waiting jobs of one queue; ask the workers of active ones to stop.
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
-- ARGV[2] error: the error a cancelled waiting job gets
-- ARGV[3..] job ids
-- Returns: per id, in order, {status, state}: status 'ok' (cancelled), 'cancel_requested'
-- (active: its worker is told through its lease renewals), 'wrong_state' (already finished)
-- or 'not_found'.
-- Guarantees: atomic.

--!include common.lua
--!include keys.lua
--!include wake.lua
--!include place.lua

local now = clock(ARGV[1])
local out = {}
for i = 3, #ARGV do
    local id = ARGV[i]
    local key = K_JOBS .. id
    local v = redis.call('HMGET', key, 's', 'q', 'p', 'r')
    local state = v[1]
    local seq = tonum(v[2], 0)
    if not state then
        out[#out + 1] = {'not_found', ''}
    elseif state == 'active' then
        redis.call('HSET', key, 'c', '1')
        out[#out + 1] = {'cancel_requested', 'active'}
    elseif state == 'queued' or state == 'scheduled' or state == 'retrying' then
        if state == 'queued' then
            unplace(id, tonum(v[3], 0), seconds(v[4]) or 0, seq)
        else
            redis.call('ZREM', state_set(state), smember(seq, id))
        end
        redis.call('HDEL', key, 'res', 't', 'x', 'w', 'c')
        redis.call('HSET', key, 's', 'cancelled', 'f', num(now), 'err', ARGV[2])
        redis.call('ZADD', K_CANCELLED, num(now), smember(seq, id))
        out[#out + 1] = {'ok', 'cancelled'}
    else
        out[#out + 1] = {'wrong_state', state}
    end
end
return out
