-- job_rescue_many: apply the rescuer's decisions to active jobs of one queue whose lease ran
-- out (the caller found them with job_expired and decided with the core's policy).
--
-- KEYS[1] jobs: prefix of the queue's job hashes (job key = prefix .. id)
-- KEYS[2] meta: the queue's meta hash (the ready list's tail)
-- KEYS[3] ready: list of in-order priority-0 queued jobs
-- KEYS[4] queued: zset of the other queued jobs
-- KEYS[5] active: zset of leased jobs, score the lease expiry
-- KEYS[6] failed: zset of failed jobs
-- KEYS[7] cancelled: zset of cancelled jobs
-- KEYS[8] wake: list idle workers block on
-- KEYS[9] queued_by_seq: listing index of the queued set's jobs (the ready list needs none)
-- KEYS[10] failed_by_seq: listing index of failed jobs
-- KEYS[11] cancelled_by_seq: listing index of cancelled jobs
-- KEYS[12] dead: hash of id -> stale ready-list entries of that job (see place.lua)
-- KEYS[13] expiring: zset of finished jobs with a retention of their own, score its expiry
-- KEYS[14] groups: prefix of the keys of the queue's groups (see groups.lua)
-- KEYS[15] ring: zset of the groups with queued jobs and room, score their turn
-- KEYS[16] group_idle: zset of the groups that hold no job, score when their record may go
-- KEYS[17] group_records: hash of group key -> its record (see groups.lua)
-- ARGV[1] now: epoch seconds, or '' for the server clock
-- ARGV[2] cancelled_error: the error of a job requeued while a cancel was pending (cancelled
--         instead)
-- ARGV[3] n: number of rescues; then 5 arguments per rescue:
--         id, token, kind (requeue|fail|cancel), stalls (the job's new count), error
-- Returns: per rescue, in order: 'ok', 'lease_lost' (no longer active, another token, or the
-- lease renewed meanwhile) or 'not_found'; or an error reply, having written nothing, when an
-- argument is invalid.
-- Guarantees: atomic, and every argument is checked before the first write; a decision is
-- applied only while the job is active with the token the rescuer saw and its lease (its score
-- in the active set) is still at or before ``now``. Every rescue sets the stall count, the
-- error and a history entry and clears the token; a requeued job goes back to queued at
-- ``now`` with its attempt given back and wakes one idle worker, unless a cancel is pending:
-- then it is cancelled. A failed job with a retention of its own (kf) gets its expiry (ex)
-- and joins ``expiring``.

local K_JOBS = KEYS[1]
local K_META = KEYS[2]
local K_READY = KEYS[3]
local K_QUEUED = KEYS[4]
local K_ACTIVE = KEYS[5]
local K_FAILED = KEYS[6]
local K_CANCELLED = KEYS[7]
local K_WAKE = KEYS[8]
local K_QUEUED_BY_SEQ = KEYS[9]
local K_FAILED_BY_SEQ = KEYS[10]
local K_CANCELLED_BY_SEQ = KEYS[11]
local K_DEAD = KEYS[12]
local K_EXPIRING = KEYS[13]
local K_GROUPS = KEYS[14]
local K_RING = KEYS[15]
local K_GROUP_IDLE = KEYS[16]
local K_GROUP_RECORDS = KEYS[17]

--!include common.lua
--!include args.lua
--!include members.lua
--!include fields.lua
--!include field_edits.lua
--!include history.lua
--!include wake.lua
--!include groups.lua
--!include place.lua
--!include sets.lua
--!include settle.lua

local given_now = now_arg(1)
local n = tonumber(ARGV[3])
if not (n and n % 1 == 0 and n >= 0 and n <= MAX_BATCH and #ARGV == 3 + 5 * n) then
    refuse(3, 'the rescue count must say how many rescues of 5 arguments follow')
    n = 0
end
for i = 0, n - 1 do
    local base = 4 + i * 5
    local kind = ARGV[base + 2]
    checked_item = base
    if not (kind == 'requeue' or kind == 'fail' or kind == 'cancel') then
        refuse(base + 2, 'a rescue must requeue, fail or cancel')
    end
    number_arg(base + 3, 0, 1e9, true, 'stalls must be a whole number from 0')
end
checked_item = nil
local bad = refused('job_rescue_many')
if bad then
    return bad
end

local now = clock(given_now)
group_now = now
sets_direct = n < GATHER_FROM
local out = {}
local woken = false

for i = 0, n - 1 do
    local base = 4 + i * 5
    local id = ARGV[base]
    local kind = ARGV[base + 2]
    local err = ARGV[base + 4]
    local key = K_JOBS .. id
    -- state, token, seq, cancel requested, attempt, priority, run at, enqueued at, retention
    -- once failed, group, group limits
    local v = redis.call('HMGET', key, 's', 't', 'q', 'c', 'a', 'p', 'r', 'e', 'kf', 'g', 'gl')
    local seq = tonum(v[3], 0)
    local member = smember(seq, id)
    local lease = nil
    if v[1] == 'active' and v[2] == ARGV[base + 1] then
        lease = tonumber(redis.call('ZSCORE', K_ACTIVE, member))
    end
    if not v[1] then
        out[#out + 1] = 'not_found'
    elseif lease == nil or lease > now then
        out[#out + 1] = 'lease_lost'
    else
        if v[4] and kind == 'requeue' then
            kind, err = 'cancel', ARGV[2]
        end
        zrem_later(K_ACTIVE, member)
        if v[10] then
            group_leave(v[10])
        end
        local fields = {'k', int(tonumber(ARGV[base + 3]))}
        local gone = {'t', 'x', 'w', 'c', 'i'}
        note_error(fields, key, v[5], now, err)
        if kind == 'requeue' then
            fields[#fields + 1] = 's'
            fields[#fields + 1] = 'queued'
            give_back_attempt(fields, gone, v[5])
            move_run_at(fields, v[7], v[8], when(now))
            redis.call('HDEL', key, unpack(gone))
            redis.call('HSET', key, unpack(fields))
            place(id, tonum(v[6], 0), now, seq, v[10], v[11])
            woken = true
        else
            local state, set, by_seq = 'failed', K_FAILED, K_FAILED_BY_SEQ
            if kind == 'cancel' then
                state, set, by_seq = 'cancelled', K_CANCELLED, K_CANCELLED_BY_SEQ
            end
            fields[#fields + 1] = 's'
            fields[#fields + 1] = state
            fields[#fields + 1] = 'f'
            fields[#fields + 1] = num(now)
            gone[#gone + 1] = 'res'
            if kind == 'fail' and tonumber(v[9]) then
                local expires = num(now + tonumber(v[9]))
                fields[#fields + 1] = 'ex'
                fields[#fields + 1] = expires
                redis.call('ZADD', K_EXPIRING, expires, member)
            end
            redis.call('HDEL', key, unpack(gone))
            redis.call('HSET', key, unpack(fields))
            zadd_later(set, num(now), member)
            zadd_later(by_seq, int(seq), id)
        end
        out[#out + 1] = 'ok'
    end
end

if group_settle() then
    woken = true  -- a group has room again
end
settle(woken)
return out
