-- job_retry_many: move failed and cancelled jobs of one queue back to queued, with one more
-- attempt allowed.
--
-- KEYS[1] jobs: prefix of the queue's job hashes (job key = prefix .. id)
-- KEYS[2] meta: the queue's meta hash (sequence numbers, the ready list's tail)
-- KEYS[3] ready: list of in-order priority-0 queued jobs
-- KEYS[4] queued: zset of the other queued jobs
-- KEYS[5] failed: zset of failed jobs
-- KEYS[6] cancelled: zset of cancelled jobs
-- KEYS[7] wake: list idle workers block on
-- KEYS[8] queued_by_seq: listing index of the queued set's jobs (the ready list needs none)
-- KEYS[9] failed_by_seq: listing index of failed jobs
-- KEYS[10] cancelled_by_seq: listing index of cancelled jobs
-- KEYS[11] dead: hash of id -> stale ready-list entries of that job (see place.lua)
-- KEYS[12] expiring: zset of finished jobs with a retention of their own
-- KEYS[13] groups: prefix of the keys of the queue's groups (see groups.lua)
-- KEYS[14] ring: zset of the groups with queued jobs and room, score their turn
-- KEYS[15] group_idle: zset of the groups that hold no job, score when their record may go
-- KEYS[16] group_records: hash of group key -> its record (see groups.lua)
-- ARGV[1] now: epoch seconds, or '' for the server clock
-- ARGV[2..] job ids
-- Returns: per id, in order, {status, state}: status 'ok' (now queued), 'wrong_state' or
-- 'not_found'; or an error reply, having written nothing, when an argument is invalid.
-- Guarantees: atomic; a retried job gets a new sequence number (it lists as new), runs at
-- now, keeps its last error, history and token, has no stalls or pending cancel, and wakes
-- one idle worker; its expiry (ex) and its entry in ``expiring`` go.

local K_JOBS = KEYS[1]
local K_META = KEYS[2]
local K_READY = KEYS[3]
local K_QUEUED = KEYS[4]
local K_FAILED = KEYS[5]
local K_CANCELLED = KEYS[6]
local K_WAKE = KEYS[7]
local K_QUEUED_BY_SEQ = KEYS[8]
local K_FAILED_BY_SEQ = KEYS[9]
local K_CANCELLED_BY_SEQ = KEYS[10]
local K_DEAD = KEYS[11]
local K_EXPIRING = KEYS[12]
local K_GROUPS = KEYS[13]
local K_RING = KEYS[14]
local K_GROUP_IDLE = KEYS[15]
local K_GROUP_RECORDS = KEYS[16]

--!include common.lua
--!include args.lua
--!include members.lua
--!include fields.lua
--!include field_edits.lua
--!include wake.lua
--!include groups.lua
--!include place.lua
--!include sets.lua
--!include settle.lua
--!include seq.lua

local given_now = now_arg(1)
local bad = refused('job_retry_many')
if bad then
    return bad
end

local FINISHED = {
    failed = {K_FAILED, K_FAILED_BY_SEQ},
    cancelled = {K_CANCELLED, K_CANCELLED_BY_SEQ},
}
local now = clock(given_now)
local now_text = when(now)
group_now = now
local out = {}
local woken = false
for i = 2, #ARGV do
    local id = ARGV[i]
    local key = K_JOBS .. id
    local v = redis.call('HMGET', key, 's', 'q', 'p', 'a', 'r', 'e', 'g', 'gl')
    local state = v[1]
    if not state then
        out[#out + 1] = {'not_found', ''}
    elseif FINISHED[state] then
        local member = smember(tonum(v[2], 0), id)
        redis.call('ZREM', FINISHED[state][1], member)
        redis.call('ZREM', K_EXPIRING, member)
        zrem_later(FINISHED[state][2], id)
        local seq = next_seq(1)
        local fields = {'s', 'queued', 'm', int(tonum(v[4], 0) + 1), 'q', int(seq)}
        move_run_at(fields, v[5], v[6], now_text)
        redis.call('HDEL', key, 'f', 'k', 'c', 'x', 'w', 'i', 'ex')
        redis.call('HSET', key, unpack(fields))
        place(id, tonum(v[3], 0), now, seq, v[7], v[8])
        woken = true
        out[#out + 1] = {'ok', 'queued'}
    else
        out[#out + 1] = {'wrong_state', state}
    end
end
settle(woken)
return out
