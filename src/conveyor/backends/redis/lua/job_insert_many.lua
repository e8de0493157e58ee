-- job_insert_many: insert new jobs into one queue; an id that exists is left untouched.
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
-- KEYS[10] groups: prefix of the keys of the queue's groups (see groups.lua)
-- KEYS[11] ring: zset of the groups with queued jobs and room, score their turn
-- KEYS[12] group_idle: zset of the groups that hold no job, score when their record may go
-- KEYS[13] group_records: hash of group key -> its record (see groups.lua)
-- KEYS[14..] others: job key prefixes of the other queues an id must not exist in (standalone
--            Redis only; on a cluster they live on other nodes and are checked beforehand)
-- ARGV[1] now: epoch seconds, or '' for the server clock
-- ARGV[2] n: number of jobs; then 12 arguments per job:
--         id, name, payload, priority, max_attempts, run_at ('' = now + delay), delay,
--         keep_completed, keep_failed (the job's own retention in seconds, '' = none),
--         group (its key, '' = none), group limits ('<concurrency>,<rate count>,<rate per>'),
--         headers (JSON text stored as sent, '' = none)
-- Returns: per job, in order, its state, after a '!' when it is a duplicate (not inserted); or
-- an error reply, having written nothing, when an argument is invalid or a job key holds
-- something other than a job hash.
-- Guarantees: atomic; a duplicate id (here, in another queue passed as KEYS[14..], or earlier in
-- the same batch) keeps its first job; new queued jobs wake one idle worker. A grouped job
-- joins its group, whose limits become the job's (a new group takes its turn now).

local K_JOBS = KEYS[1]
local K_META = KEYS[2]
local K_READY = KEYS[3]
local K_QUEUED = KEYS[4]
local K_SCHEDULED = KEYS[5]
local K_WAKE = KEYS[6]
local K_QUEUED_BY_SEQ = KEYS[7]
local K_SCHEDULED_BY_SEQ = KEYS[8]
local K_DEAD = KEYS[9]
local K_GROUPS = KEYS[10]
local K_RING = KEYS[11]
local K_GROUP_IDLE = KEYS[12]
local K_GROUP_RECORDS = KEYS[13]
local FIRST_OTHER = 14
local PER_JOB = 12

--!include insert_one.lua
--!include common.lua
--!include args.lua
--!include members.lua
--!include wake.lua
--!include groups.lua
--!include place.lua
--!include seq.lua
--!include new_job.lua
--!include existing.lua

local given_now = now_arg(1)
local n = tonumber(ARGV[2])
if not (n and n % 1 == 0 and n >= 0 and n <= MAX_BATCH and #ARGV == 2 + PER_JOB * n) then
    refuse(2, 'the job count must say how many jobs of 12 arguments follow')
    n = 0
end
for i = 0, n - 1 do
    local base = 3 + i * PER_JOB
    local p, m, r, d = ARGV[base + 3], ARGV[base + 4], ARGV[base + 5], ARGV[base + 6]
    for k = base + 7, base + 8 do
        if ARGV[k] ~= '' then
            checked_item = base
            number_arg(k, 0, MAX_SECONDS, false, 'a retention must be seconds from 0 to 3153600000')
        end
    end
    if ARGV[base + 9] ~= '' or ARGV[base + 10] ~= '' then
        checked_item = base
        group_args(base + 9)
    end
    -- What the driver sends for the usual job (priority 0, no run time, no delay) is told by
    -- comparing text, without parsing a number; anything else is parsed and checked.
    if not (p == '0' and r == '' and (d == '0.0' or d == '0')
        and (string.find(m, '^[1-9]%d?%d?$') or m == '1000')) then
        checked_item = base
        number_arg(base + 3, -1000000, 1000000, true,
            'priority must be a whole number from -1000000 to 1000000')
        if not (string.find(m, '^[1-9]%d?%d?$') or m == '1000') then
            refuse(base + 4, 'max_attempts must be a whole number from 1 to 1000, in digits')
        end
        if r ~= '' then
            number_arg(base + 5, 0, MAX_EPOCH, false,
                'run_at must be epoch seconds from 0 to 7258118400')
        end
        number_arg(base + 6, 0, MAX_SECONDS, false, 'delay must be seconds from 0 to 3153600000')
    end
end
checked_item = nil
local bad = refused('job_insert_many')
if bad then
    return bad
end

local now = clock(given_now)
group_now = now
local out = {}
local seq = nil
local woken = false
local last_run_at, last_text = nil, nil  -- jobs of one batch mostly share their run time

local found = existing_states('job_insert_many', n, PER_JOB)
if found.err then
    return found  -- the error, before anything was written
end

local inserted = {}  -- ids inserted by this call (a later duplicate in the batch sees them)
for i = 0, n - 1 do
    local base = 3 + i * PER_JOB
    local id = ARGV[base]
    local existing = found[i] or inserted[id]
    if existing then
        out[#out + 1] = '!' .. existing
    else
        if seq == nil then
            seq = next_seq(n)
        else
            seq = seq + 1
        end
        local priority, run_at = 0, ARGV[base + 5]
        if ARGV[base + 3] ~= '0' then
            priority = tonumber(ARGV[base + 3])
        end
        if run_at ~= '' then
            run_at = tonumber(run_at)
        elseif ARGV[base + 6] == '0.0' or ARGV[base + 6] == '0' then
            run_at = now
        else
            run_at = now + tonumber(ARGV[base + 6])
        end
        if run_at ~= last_run_at then
            last_run_at, last_text = run_at, when(run_at)
        end
        local state = new_job(id, ARGV[base + 1], ARGV[base + 2], priority, ARGV[base + 4],
            run_at, last_text, seq, now, ARGV[base + 7], ARGV[base + 8], ARGV[base + 9],
            ARGV[base + 10], ARGV[base + 11])
        if state == 'queued' then
            woken = true
        end
        out[#out + 1] = state
        inserted[id] = state
    end
end

save_tail()
if woken then
    wake()
end
return out
