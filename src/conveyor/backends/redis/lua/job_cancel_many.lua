-- job_cancel_many: cancel waiting jobs of one queue; ask the workers of active ones to stop.
--
-- KEYS[1] jobs: prefix of the queue's job hashes (job key = prefix .. id)
-- KEYS[2] queued: zset of the queued jobs that are not in the ready list
-- KEYS[3] dead: hash of id -> stale ready-list entries of that job (see take.lua)
-- KEYS[4] scheduled: zset of jobs waiting for their run time
-- KEYS[5] retrying: zset of jobs waiting to be retried
-- KEYS[6] cancelled: zset of cancelled jobs, score the finish time
-- KEYS[7] queued_by_seq: listing index of the queued set's jobs (the ready list needs none)
-- KEYS[8] scheduled_by_seq: listing index of scheduled jobs
-- KEYS[9] retrying_by_seq: listing index of retrying jobs
-- KEYS[10] cancelled_by_seq: listing index of cancelled jobs
-- KEYS[11] meta: the queue's meta hash (its count of grouped queued jobs)
-- KEYS[12] groups: prefix of the keys of the queue's groups (see groups.lua)
-- KEYS[13] ring: zset of the groups with queued jobs and room, score their turn
-- KEYS[14] group_idle: zset of the groups that hold no job, score when their record may go
-- KEYS[15] group_records: hash of group key -> its record (see groups.lua)
-- ARGV[1] now: epoch seconds, or '' for the server clock
-- ARGV[2] error: the error a cancelled waiting job gets
-- ARGV[3..] job ids
-- Returns: per id, in order, {status, state, worker}: status 'ok' (cancelled),
-- 'cancel_requested' (active: ``worker`` is the id of the worker running it, to be told),
-- 'wrong_state' (already finished) or 'not_found'; or an error reply, having written nothing,
-- when an argument is invalid.
-- Guarantees: atomic; O(log n) per id, whatever the queue's length: a job in the ready list
-- keeps its entry there, counted as stale (fetches pass over it), instead of being searched
-- for. A cancelled waiting job keeps its token and history, and gets no history entry (an
-- operator's cancel is no attempt's error).

local K_JOBS = KEYS[1]
local K_QUEUED = KEYS[2]
local K_DEAD = KEYS[3]
local K_SCHEDULED = KEYS[4]
local K_RETRYING = KEYS[5]
local K_CANCELLED = KEYS[6]
local K_QUEUED_BY_SEQ = KEYS[7]
local K_SCHEDULED_BY_SEQ = KEYS[8]
local K_RETRYING_BY_SEQ = KEYS[9]
local K_CANCELLED_BY_SEQ = KEYS[10]
local K_META = KEYS[11]
local K_GROUPS = KEYS[12]
local K_RING = KEYS[13]
local K_GROUP_IDLE = KEYS[14]
local K_GROUP_RECORDS = KEYS[15]

--!include common.lua
--!include args.lua
--!include members.lua
--!include groups.lua
--!include sets.lua

local given_now = now_arg(1)
local bad = refused('job_cancel_many')
if bad then
    return bad
end

local WAITING = {
    scheduled = {K_SCHEDULED, K_SCHEDULED_BY_SEQ},
    retrying = {K_RETRYING, K_RETRYING_BY_SEQ},
    queued = {nil, K_QUEUED_BY_SEQ},
}
local now = clock(given_now)
local out = {}
for i = 3, #ARGV do
    local id = ARGV[i]
    local key = K_JOBS .. id
    local v = redis.call('HMGET', key, 's', 'q', 'p', 'r', 'w', 'g')
    local state = v[1]
    local seq = tonum(v[2], 0)
    if not state then
        out[#out + 1] = {'not_found', '', ''}
    elseif state == 'active' then
        redis.call('HSET', key, 'c', '1')
        out[#out + 1] = {'cancel_requested', 'active', v[5] or ''}
    elseif WAITING[state] then
        if state == 'queued' then
            -- Where place() put it: the queued set, else the ready list, where it stays.
            local member = qmember(seconds(v[4]) or 0, seq, id)
            if v[6] then  -- a grouped job waits in its group, never in the ready list
                group_out(v[6], member, now)
            elseif redis.call('ZREM', K_QUEUED, member) == 0 then
                redis.call('HINCRBY', K_DEAD, id, 1)
            end
        else
            redis.call('ZREM', WAITING[state][1], smember(seq, id))
        end
        zrem_later(WAITING[state][2], id)
        redis.call('HDEL', key, 'res', 'x', 'w', 'c', 'i')
        redis.call('HSET', key, 's', 'cancelled', 'f', num(now), 'err', ARGV[2])
        zadd_later(K_CANCELLED, num(now), smember(seq, id))
        zadd_later(K_CANCELLED_BY_SEQ, int(seq), id)
        out[#out + 1] = {'ok', 'cancelled', ''}
    else
        out[#out + 1] = {'wrong_state', state, ''}
    end
end
flush_sets()
group_flush()
return out
