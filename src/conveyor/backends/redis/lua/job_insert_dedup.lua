-- job_insert_dedup: job_insert_many for jobs with a dedup key, into one queue: each job is a
-- duplicate of the job holding its key while that holds it, or replaces a debounced holder's
-- payload, run time, group and headers, or (its key free) a duplicate of an existing id, or is
-- inserted and takes its key.
--
-- KEYS[1] jobs: prefix of the queue's job hashes (job key = prefix .. id)
-- KEYS[2] meta: the queue's meta hash (sequence numbers, the ready list's tail)
-- KEYS[3] ready: list of in-order priority-0 queued jobs
-- KEYS[4] queued: zset of the other queued jobs
-- KEYS[5] scheduled: zset of jobs waiting for their run time
-- KEYS[6] wake: list idle workers block on
-- KEYS[7] queued_by_seq: listing index of queued jobs in the queued set (score seq, member id)
-- KEYS[8] scheduled_by_seq: listing index of scheduled jobs
-- KEYS[9] dead: hash of id -> stale ready-list entries of that job (see place.lua)
-- KEYS[10] dedup: hash of dedup key -> the record of the job holding it (see dedup.lua)
-- KEYS[11] dedup_jobs: hash of job id -> the dedup key it took
-- KEYS[12] groups: prefix of the keys of the queue's groups (see groups.lua)
-- KEYS[13] ring: zset of the groups with queued jobs and room, score their turn
-- KEYS[14] group_idle: zset of the groups that hold no job, score when their record may go
-- KEYS[15] group_records: hash of group key -> its record (see groups.lua)
-- KEYS[16..] others: job key prefixes of the other queues an id must not exist in (standalone
--            Redis only, as for job_insert_many)
-- ARGV[1] now: epoch seconds, or '' for the server clock
-- ARGV[2] n: number of jobs; then 15 arguments per job:
--         id, name, payload, priority, max_attempts, run_at ('' = now + delay), delay,
--         mode (until_started|until_finished|throttle|debounce, or '' for a job without a
--         key, inserted as job_insert_many would), key, ttl (throttle seconds, else 0),
--         keep_completed, keep_failed (the job's own retention in seconds, '' = none; a
--         debounce that replaces a waiting job keeps that job's), group (its key, '' =
--         none), group limits ('<concurrency>,<rate count>,<rate per>', see groups.lua),
--         headers (JSON text stored as sent, '' = none; a debounce that replaces a waiting
--         job replaces its headers, or removes them)
-- Returns: per job, in order, {outcome, state, id}: outcome 'inserted', 'duplicate' or
-- 'replaced', the id of the job returned (the new one, or the existing one) and its state; or
-- an error reply, having written nothing, when an argument is invalid or a job key holds
-- something other than a job hash.
-- Guarantees: atomic; the rules of conveyor.drivers.common.dedup_held, decided from the holder
-- job as it is now (a holder that is gone holds nothing); the jobs of a batch act as if
-- enqueued one after another; a job inserted without a key here is never one.

local K_JOBS = KEYS[1]
local K_META = KEYS[2]
local K_READY = KEYS[3]
local K_QUEUED = KEYS[4]
local K_SCHEDULED = KEYS[5]
local K_WAKE = KEYS[6]
local K_QUEUED_BY_SEQ = KEYS[7]
local K_SCHEDULED_BY_SEQ = KEYS[8]
local K_DEAD = KEYS[9]
local K_DEDUP = KEYS[10]
local K_DEDUP_JOBS = KEYS[11]
local K_GROUPS = KEYS[12]
local K_RING = KEYS[13]
local K_GROUP_IDLE = KEYS[14]
local K_GROUP_RECORDS = KEYS[15]
local FIRST_OTHER = 16
local PER_JOB = 15

--!include common.lua
--!include args.lua
--!include members.lua
--!include wake.lua
--!include groups.lua
--!include place.lua
--!include seq.lua
--!include new_job.lua
--!include existing.lua
--!include fields.lua
--!include field_edits.lua
--!include dedup.lua

local MODES = {until_started = 's', until_finished = 'f', throttle = 't', debounce = 'd'}

local given_now = now_arg(1)
local n = tonumber(ARGV[2])
if not (n and n % 1 == 0 and n >= 0 and n <= MAX_BATCH and #ARGV == 2 + PER_JOB * n) then
    refuse(2, 'the job count must say how many jobs of 15 arguments follow')
    n = 0
end
for i = 0, n - 1 do
    local base = 3 + i * PER_JOB
    checked_item = base
    number_arg(base + 3, -1000000, 1000000, true,
        'priority must be a whole number from -1000000 to 1000000')
    if not (string.find(ARGV[base + 4], '^[1-9]%d?%d?$') or ARGV[base + 4] == '1000') then
        refuse(base + 4, 'max_attempts must be a whole number from 1 to 1000, in digits')
    end
    if ARGV[base + 5] ~= '' then
        number_arg(base + 5, 0, MAX_EPOCH, false,
            'run_at must be epoch seconds from 0 to 7258118400')
    end
    number_arg(base + 6, 0, MAX_SECONDS, false, 'delay must be seconds from 0 to 3153600000')
    local mode = MODES[ARGV[base + 7]]
    if not mode and ARGV[base + 7] ~= '' then
        refuse(base + 7, "mode must be until_started, until_finished, throttle, debounce or ''")
    end
    if mode and ARGV[base + 8] == '' then
        refuse(base + 8, 'the dedup key must not be empty')
    end
    if mode == 't' then
        local ttl = number_arg(base + 9, 0, MAX_SECONDS, false,
            'ttl must be seconds from 0 to 3153600000')
        if ttl and ttl <= 0 then
            refuse(base + 9, 'a throttle ttl must be more than 0 seconds')
        end
    elseif ARGV[base + 9] ~= '0' and ARGV[base + 9] ~= '0.0' then
        refuse(base + 9, 'only a throttle has a ttl')
    end
    if mode == 'd' and (ARGV[base + 5] ~= '' or not ((tonumber(ARGV[base + 6]) or 0) > 0)) then
        refuse(base + 6, 'a debounced job needs a delay greater than 0 and no run_at')
    end
    for k = base + 10, base + 11 do
        if ARGV[k] ~= '' then
            number_arg(k, 0, MAX_SECONDS, false, 'a retention must be seconds from 0 to 3153600000')
        end
    end
    group_args(base + 12)
end
checked_item = nil
local bad = refused('job_insert_dedup')
if bad then
    return bad
end

local now = clock(given_now)
group_now = now
local out = {}
local woken = false

local found = existing_states('job_insert_dedup', n, PER_JOB)
if found.err then
    return found  -- the error, before anything was written
end

local WAITING = {scheduled = true, queued = true, retrying = true}
local FINISHED = {completed = true, failed = true, cancelled = true}

-- Whether the holder (its fields name, state, started at, run at) still holds its key, by the
-- mode it took it with: conveyor.drivers.common.dedup_held.
local function held(mode, expiry, v)
    if mode == 's' then
        return WAITING[v[2]] and not v[3]
    elseif mode == 'f' then
        return not FINISHED[v[2]]
    elseif mode == 't' then
        return expiry ~= nil and now < expiry
    end
    return v[2] == 'scheduled' and not v[3] and seconds(v[4]) > now
end

local inserted = {}  -- ids inserted by this call (a later duplicate in the batch sees them)
for i = 0, n - 1 do
    local base = 3 + i * PER_JOB
    local id, name, key = ARGV[base], ARGV[base + 1], ARGV[base + 8]
    local mode = MODES[ARGV[base + 7]]
    local run_at = ARGV[base + 5]
    if run_at ~= '' then
        run_at = tonumber(run_at)
    else
        run_at = now + tonumber(ARGV[base + 6])
    end
    -- A held key decides first (so a debounce with a fixed id replaces), then the id.
    local outcome = nil
    if mode then
        local record = redis.call('HGET', K_DEDUP, key)
        if record then
            local held_mode, expiry, holder = dedup_record(record)
            local hkey = K_JOBS .. holder
            local v = redis.call('HMGET', hkey, 'n', 's', 'b', 'r', 'e', 'q')
            if v[2] and held(held_mode, expiry, v) then
                if held_mode == 'd' and mode == 'd' and v[1] == name then
                    local fields, gone = {'d', ARGV[base + 2]}, {}
                    move_run_at(fields, v[4], v[5], when(run_at))
                    -- The group of its new payload: it is scheduled, in no group's set yet.
                    if ARGV[base + 12] ~= '' then
                        fields[#fields + 1] = 'g'
                        fields[#fields + 1] = ARGV[base + 12]
                        fields[#fields + 1] = 'gl'
                        fields[#fields + 1] = ARGV[base + 13]
                    else
                        gone[1], gone[2] = 'g', 'gl'
                    end
                    if ARGV[base + 14] ~= '' then
                        fields[#fields + 1] = 'hd'
                        fields[#fields + 1] = ARGV[base + 14]
                    else
                        gone[#gone + 1] = 'hd'
                    end
                    if #gone > 0 then
                        redis.call('HDEL', hkey, unpack(gone))
                    end
                    redis.call('HSET', hkey, unpack(fields))
                    redis.call('ZADD', K_SCHEDULED, num(run_at), smember(tonumber(v[6]), holder))
                    outcome = {'replaced', 'scheduled', holder}
                else
                    outcome = {'duplicate', v[2], holder}
                end
            end
        end
    end
    local existing = found[i] or inserted[id]
    if not outcome and existing then
        outcome = {'duplicate', existing, id}
    end
    if not outcome then
        local seq = next_seq(1)
        local priority = tonumber(ARGV[base + 3])
        local state = new_job(id, name, ARGV[base + 2], priority, ARGV[base + 4], run_at,
            when(run_at), seq, now, ARGV[base + 10], ARGV[base + 11], ARGV[base + 12],
            ARGV[base + 13], ARGV[base + 14])
        if state == 'queued' then
            woken = true
        end
        if mode then
            local expiry = ''
            if mode == 't' then
                expiry = num(now + tonumber(ARGV[base + 9]))
            end
            redis.call('HSET', K_DEDUP, key, mode .. '|' .. expiry .. '|' .. id)
            redis.call('HSET', K_DEDUP_JOBS, id, key)
        end
        inserted[id] = state
        outcome = {'inserted', state, id}
    end
    out[#out + 1] = outcome
end

save_tail()
if woken then
    wake()
end
return out
