-- cron_fire: fire one tick of a schedule: record the tick and insert its job, unless the tick
-- (or a later one) is recorded already.
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
-- KEYS[14] cron: the schedule's hash (what workers declared; t latest tick, st its status
--          'fired' or 'skipped', ft when it was recorded, lj the job of the last fired tick)
-- ARGV[1] now: epoch seconds, or '' for the server clock
-- ARGV[2] tick: epoch seconds, a whole number
-- ARGV[3] skip_if_running: '1' to skip the tick while the last fired tick's job is unfinished
-- ARGV[4..15] the tick's job: id, name, payload, priority, max_attempts, run_at ('' = now +
--             delay), delay, keep_completed, keep_failed (its own retention in seconds, '' =
--             none), group (its key, '' = none), group limits (see groups.lua), headers (JSON
--             text stored as sent, '' = none)
-- Returns: {status, latest tick}: status 'fired' (recorded, job inserted), 'skipped'
-- (recorded, no job) or 'already' (this tick or a later one was recorded: nothing written);
-- or an error reply, having written nothing, when an argument is invalid.
-- Guarantees: atomic; a tick is recorded, and its job inserted, once, however many callers
-- fire it; the tick's job is placed and wakes an idle worker as job_insert_many's would.

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
local K_CRON = KEYS[14]

--!include common.lua
--!include args.lua
--!include members.lua
--!include wake.lua
--!include groups.lua
--!include place.lua
--!include seq.lua
--!include new_job.lua

local given_now = now_arg(1)
if #ARGV ~= 15 then
    refuse(#ARGV, 'expected 15 arguments')
end
local tick = number_arg(2, 0, MAX_EPOCH, true, 'tick must be whole epoch seconds')
checked_item = 4
local priority = number_arg(7, -1000000, 1000000, true,
    'priority must be a whole number from -1000000 to 1000000')
if not (string.find(ARGV[8], '^[1-9]%d?%d?$') or ARGV[8] == '1000') then
    refuse(8, 'max_attempts must be a whole number from 1 to 1000, in digits')
end
local run_at = nil
if ARGV[9] ~= '' then
    run_at = number_arg(9, 0, MAX_EPOCH, false, 'run_at must be epoch seconds from 0 to 7258118400')
end
local delay = number_arg(10, 0, MAX_SECONDS, false, 'delay must be seconds from 0 to 3153600000')
for k = 11, 12 do
    if ARGV[k] ~= '' then
        number_arg(k, 0, MAX_SECONDS, false, 'a retention must be seconds from 0 to 3153600000')
    end
end
if #ARGV == 15 then
    group_args(13)
end
checked_item = nil
local bad = refused('cron_fire')
if bad then
    return bad
end

local last = redis.call('HMGET', K_CRON, 't', 'lj')
local last_tick = tonumber(last[1])
if last_tick and tick <= last_tick then
    return {'already', int(last_tick)}
end

local now = clock(given_now)
group_now = now
local id = ARGV[4]
local status = 'fired'
if ARGV[3] == '1' and last[2] then
    local state = redis.call('HGET', K_JOBS .. last[2], 's')
    if state and state ~= 'completed' and state ~= 'failed' and state ~= 'cancelled' then
        status = 'skipped'
    end
end

if status == 'fired' and not redis.call('HGET', K_JOBS .. id, 's') then
    local seq = next_seq(1)
    if run_at == nil then
        run_at = now + delay
    end
    local state = new_job(id, ARGV[5], ARGV[6], priority, ARGV[8], run_at, when(run_at), seq,
        now, ARGV[11], ARGV[12], ARGV[13], ARGV[14], ARGV[15])
    if state == 'queued' then
        save_tail()
        wake()
    end
end

local record = {'t', int(tick), 'st', status, 'ft', num(now)}
if status == 'fired' then
    record[#record + 1] = 'lj'
    record[#record + 1] = id
end
redis.call('HSET', K_CRON, unpack(record))
return {status, int(tick)}
