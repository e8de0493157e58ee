-- job_finish_many: apply completions and failures to leased jobs of one queue, each fenced by
-- its lease token, then trim completed jobs beyond the retention count.
--
-- KEYS[1] jobs: prefix of the queue's job hashes (job key = prefix .. id)
-- KEYS[2] meta: the queue's meta hash (the ready list's tail)
-- KEYS[3] ready: list of in-order priority-0 queued jobs
-- KEYS[4] queued: zset of the other queued jobs
-- KEYS[5] scheduled: zset of jobs waiting for their run time
-- KEYS[6] retrying: zset of jobs waiting to be retried
-- KEYS[7] active: zset of leased jobs
-- KEYS[8] completed: zset of completed jobs, score the finish time
-- KEYS[9] failed: zset of failed jobs
-- KEYS[10] cancelled: zset of cancelled jobs
-- KEYS[11] wake: list idle workers block on
-- KEYS[12] queued_by_seq: listing index of the queued set's jobs (the ready list needs none)
-- KEYS[13] scheduled_by_seq: listing index of scheduled jobs
-- KEYS[14] retrying_by_seq: listing index of retrying jobs
-- KEYS[15] completed_by_seq: listing index of completed jobs
-- KEYS[16] failed_by_seq: listing index of failed jobs
-- KEYS[17] cancelled_by_seq: listing index of cancelled jobs
-- KEYS[18] dead: hash of id -> stale ready-list entries of that job (see place.lua)
-- KEYS[19] dedup: hash of dedup key -> the record of the job holding it (see dedup.lua)
-- KEYS[20] dedup_jobs: hash of job id -> the dedup key it took
-- KEYS[21] expiring: zset of finished jobs with a retention of their own, score its expiry
-- KEYS[22] groups: prefix of the keys of the queue's groups (see groups.lua)
-- KEYS[23] ring: zset of the groups with queued jobs and room, score their turn
-- KEYS[24] group_idle: zset of the groups that hold no job, score when their record may go
-- KEYS[25] group_records: hash of group key -> its record (see groups.lua)
-- ARGV[1] now: epoch seconds, or '' for the server clock
-- ARGV[2] keep: completed jobs to keep in this queue, '' to keep all
-- ARGV[3] cancelled: the error of a job a pending cancel stops ('<this>: <error>' with one)
-- ARGV[4] n: number of finishes; then 6 arguments per finish:
--         id, token, kind (complete|retry|snooze|fail|cancel|requeue), result (optional),
--         error (optional), delay (seconds after now a retry or snooze runs again)
--         (optional arguments are '' for none, else '=' followed by the value)
-- Returns: per finish, in order: 'ok', 'lease_lost' or 'not_found'; or an error reply, having
-- written nothing, when an argument is invalid.
-- Guarantees: atomic, and every argument is checked before the first write; a finish whose
-- token is not the job's current one changes nothing, unless the job already left ``active``
-- with that token (a finish sent again after a lost reply): then it reports 'ok' and changes
-- nothing. A finish keeps the token on the job and drops its lease, worker, cancel request
-- and isolated mark; an error becomes the job's last error and joins its history (completing
-- clears the last error and never reads the history). A retry, snooze or requeue of a job
-- someone asked to cancel cancels it instead. Completing deletes the oldest completed jobs
-- beyond ``keep`` (up to 1,000 a call; maintenance prunes whatever is left), with the dedup
-- records they hold; a requeued job wakes one idle worker. A job completed with a retention of
-- its own (kc) or failed with one (kf) gets its expiry (ex) and joins ``expiring``.

local K_JOBS = KEYS[1]
local K_META = KEYS[2]
local K_READY = KEYS[3]
local K_QUEUED = KEYS[4]
local K_SCHEDULED = KEYS[5]
local K_RETRYING = KEYS[6]
local K_ACTIVE = KEYS[7]
local K_COMPLETED = KEYS[8]
local K_FAILED = KEYS[9]
local K_CANCELLED = KEYS[10]
local K_WAKE = KEYS[11]
local K_QUEUED_BY_SEQ = KEYS[12]
local K_SCHEDULED_BY_SEQ = KEYS[13]
local K_RETRYING_BY_SEQ = KEYS[14]
local K_COMPLETED_BY_SEQ = KEYS[15]
local K_FAILED_BY_SEQ = KEYS[16]
local K_CANCELLED_BY_SEQ = KEYS[17]
local K_DEAD = KEYS[18]
local K_DEDUP = KEYS[19]
local K_DEDUP_JOBS = KEYS[20]
local K_EXPIRING = KEYS[21]
local K_GROUPS = KEYS[22]
local K_RING = KEYS[23]
local K_GROUP_IDLE = KEYS[24]
local K_GROUP_RECORDS = KEYS[25]

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
--!include dedup.lua

local TRIM_BATCH = 1000

local given_now = now_arg(1)
local keep = nil
if ARGV[2] ~= '' then
    keep = number_arg(2, 0, 1e15, true, "keep must be '' or a whole number from 0")
end
local n = tonumber(ARGV[4])
if not (n and n % 1 == 0 and n >= 0 and n <= MAX_BATCH and #ARGV == 4 + 6 * n) then
    refuse(4, 'the finish count must say how many finishes of 6 arguments follow')
    n = 0
end
for i = 0, n - 1 do
    local base = 5 + i * 6
    local kind, result, err = ARGV[base + 2], ARGV[base + 3], ARGV[base + 4]
    checked_item = base
    if ARGV[base + 1] == '' then
        refuse(base + 1, 'the token must not be empty')
    end
    if not (kind == 'complete' or kind == 'retry' or kind == 'snooze' or kind == 'fail'
        or kind == 'cancel' or kind == 'requeue') then
        refuse(base + 2, 'the transition must be complete, retry, snooze, fail, cancel or requeue')
    end
    if result ~= '' and string.byte(result) ~= 61 then  -- '='
        refuse(base + 3, "the result must be '' or '=' and the value")
    end
    if err ~= '' and string.byte(err) ~= 61 then
        refuse(base + 4, "the error must be '' or '=' and the value")
    end
    if ARGV[base + 5] ~= '0.0' then  -- what a finish without a delay sends: no need to parse
        number_arg(base + 5, 0, MAX_SECONDS, false, 'delay must be seconds from 0 to 3153600000')
    end
end
checked_item = nil
local bad = refused('job_finish_many')
if bad then
    return bad
end

local now = clock(given_now)
group_now = now
sets_direct = n < GATHER_FROM
local now_text = num(now)
local out = {}
local completed = false
local woken = false

-- Optional arguments travel as '' (absent) or '=' followed by the value.
local function opt(arg)
    if arg == '' then
        return nil
    end
    return string.sub(arg, 2)
end

-- A finished job with a retention of its own (``keep``: seconds as stored, or false) expires
-- that long after now.
local function expire(key, member, keep)
    local seconds = tonumber(keep)
    if seconds then
        local at = num(now + seconds)
        redis.call('HSET', key, 'ex', at)
        redis.call('ZADD', K_EXPIRING, at, member)
    end
end

local function cancelled_error(err)
    if err == nil or err == '' then
        return ARGV[3]
    end
    return ARGV[3] .. ': ' .. err
end

for i = 0, n - 1 do
    local base = 5 + i * 6
    local id = ARGV[base]
    local kind = ARGV[base + 2]
    local key = K_JOBS .. id
    -- state, token, seq, cancel requested, retention once completed, group: what a completion
    -- (almost every finish) reads; each field named costs a lookup in the job's hash.
    local v = redis.call('HMGET', key, 's', 't', 'q', 'c', 'kc', 'g')
    -- attempt, priority, run at, enqueued at, retention once failed, group limits: read by the
    -- other transitions only
    local a, p, r, e, kf, gl
    if not v[1] then
        out[#out + 1] = 'not_found'
    elseif v[2] ~= ARGV[base + 1] then
        out[#out + 1] = 'lease_lost'
    elseif v[1] ~= 'active' then
        out[#out + 1] = 'ok'  -- applied already by this finish's first call
    else
        local seq = tonum(v[3], 0)
        if kind ~= 'complete' then
            local w = redis.call('HMGET', key, 'a', 'p', 'r', 'e', 'kf', 'gl')
            a, p, r, e, kf, gl = w[1], w[2], w[3], w[4], w[5], w[6]
        end
        local member = smember(seq, id)
        local err = opt(ARGV[base + 4])
        if v[4] and (kind == 'retry' or kind == 'snooze' or kind == 'requeue') then
            kind, err = 'cancel', cancelled_error(err)  -- cancel wins
        end
        zrem_later(K_ACTIVE, member)
        if v[6] then
            group_leave(v[6])
        end
        -- The lease goes (x, w, c, i), the token stays: a repeated finish recognises its own
        -- work by it.
        if kind == 'complete' then
            local result = opt(ARGV[base + 3])
            if result then
                redis.call('HDEL', key, 'x', 'w', 'c', 'i', 'err')
                redis.call('HSET', key, 's', 'completed', 'f', now_text, 'res', result)
            else
                redis.call('HDEL', key, 'x', 'w', 'c', 'i', 'err', 'res')
                redis.call('HSET', key, 's', 'completed', 'f', now_text)
            end
            zadd_later(K_COMPLETED, now_text, member)
            zadd_later(K_COMPLETED_BY_SEQ, int(seq), id)
            completed = true
            expire(key, member, v[5])
        elseif kind == 'fail' or kind == 'cancel' then
            local state, set, by_seq = 'failed', K_FAILED, K_FAILED_BY_SEQ
            if kind == 'cancel' then
                state, set, by_seq = 'cancelled', K_CANCELLED, K_CANCELLED_BY_SEQ
            end
            local fields = {'s', state, 'f', now_text}
            note_error(fields, key, a, now, err)
            redis.call('HDEL', key, 'x', 'w', 'c', 'i', 'res')
            redis.call('HSET', key, unpack(fields))
            if kind == 'fail' then
                expire(key, member, kf)
            end
            zadd_later(set, now_text, member)
            zadd_later(by_seq, int(seq), id)
        else
            local fields = {}
            note_error(fields, key, a, now, err)
            if kind ~= 'retry' and tonum(a, 0) <= 1 then
                redis.call('HDEL', key, 'x', 'w', 'c', 'i', 'a')  -- attempt given back: 0
            else
                redis.call('HDEL', key, 'x', 'w', 'c', 'i')
                if kind ~= 'retry' then  -- attempt given back
                    fields[#fields + 1] = 'a'
                    fields[#fields + 1] = int(tonum(a, 0) - 1)
                end
            end
            if kind == 'requeue' then  -- runnable now, in its old place in the run order
                fields[#fields + 1] = 's'
                fields[#fields + 1] = 'queued'
                redis.call('HSET', key, unpack(fields))
                place(id, tonum(p, 0), seconds(r) or 0, seq, v[6], gl)
                woken = true
            else
                local run_at = now + tonumber(ARGV[base + 5])
                local state, set, by_seq = 'retrying', K_RETRYING, K_RETRYING_BY_SEQ
                if kind == 'snooze' then
                    state, set, by_seq = 'scheduled', K_SCHEDULED, K_SCHEDULED_BY_SEQ
                end
                fields[#fields + 1] = 's'
                fields[#fields + 1] = state
                move_run_at(fields, r, e, when(run_at))
                redis.call('HSET', key, unpack(fields))
                zadd_later(set, num(run_at), member)
                zadd_later(by_seq, int(seq), id)
            end
        end
        out[#out + 1] = 'ok'
    end
end

if group_settle() then
    woken = true  -- a group has room again
end
settle(woken)
if completed and keep then
    -- At most TRIM_BATCH per call, so that a retention lowered on a large queue cannot block the
    -- server; maintenance prunes the rest.
    local excess = math.min(redis.call('ZCARD', K_COMPLETED) - keep, TRIM_BATCH)
    if excess > 0 then
        local popped = redis.call('ZPOPMIN', K_COMPLETED, excess)
        local doomed, ids, members = {}, {}, {}
        for i = 1, #popped, 2 do  -- member, score pairs
            local id = string.sub(popped[i], 17)
            members[#members + 1] = popped[i]
            ids[#ids + 1] = id
            doomed[#doomed + 1] = K_JOBS .. id
        end
        for i = 1, #ids, 500 do
            local j = math.min(i + 499, #ids)
            redis.call('DEL', unpack(doomed, i, j))
            redis.call('ZREM', K_COMPLETED_BY_SEQ, unpack(ids, i, j))
            forget_dedup(ids, i, j)
            redis.call('ZREM', K_EXPIRING, unpack(members, i, j))
        end
    end
end
return out
