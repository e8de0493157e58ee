-- job_promote_due: make chosen due scheduled and retrying jobs of one queue queued (the caller
-- picks them across queues, earliest run time first).
--
-- KEYS[1] jobs: prefix of the queue's job hashes (job key = prefix .. id)
-- KEYS[2] meta: the queue's meta hash (the ready list's tail)
-- KEYS[3] ready: list of in-order priority-0 queued jobs
-- KEYS[4] queued: zset of the other queued jobs
-- KEYS[5] scheduled: zset of jobs waiting for their run time
-- KEYS[6] retrying: zset of jobs waiting to be retried
-- KEYS[7] wake: list idle workers block on
-- KEYS[8] queued_by_seq: listing index of the queued set's jobs (the ready list needs none)
-- KEYS[9] scheduled_by_seq: listing index of scheduled jobs
-- KEYS[10] retrying_by_seq: listing index of retrying jobs
-- KEYS[11] dead: hash of id -> stale ready-list entries of that job (see place.lua)
-- KEYS[12] groups: prefix of the keys of the queue's groups (see groups.lua)
-- KEYS[13] ring: zset of the groups with queued jobs and room, score their turn
-- KEYS[14] group_idle: zset of the groups that hold no job, score when their record may go
-- KEYS[15] group_records: hash of group key -> its record (see groups.lua)
-- ARGV[1] now: epoch seconds, or '' for the server clock
-- ARGV[2..] pairs of set name ('scheduled' or 'retrying') and member
-- Returns: how many jobs moved; or an error reply, having written nothing, when an argument is
-- invalid.
-- Guarantees: atomic; a member no longer in its set or not yet due is left alone; moved jobs
-- wake one idle worker.

local K_JOBS = KEYS[1]
local K_META = KEYS[2]
local K_READY = KEYS[3]
local K_QUEUED = KEYS[4]
local K_SCHEDULED = KEYS[5]
local K_RETRYING = KEYS[6]
local K_WAKE = KEYS[7]
local K_QUEUED_BY_SEQ = KEYS[8]
local K_SCHEDULED_BY_SEQ = KEYS[9]
local K_RETRYING_BY_SEQ = KEYS[10]
local K_DEAD = KEYS[11]
local K_GROUPS = KEYS[12]
local K_RING = KEYS[13]
local K_GROUP_IDLE = KEYS[14]
local K_GROUP_RECORDS = KEYS[15]

--!include common.lua
--!include args.lua
--!include members.lua
--!include wake.lua
--!include groups.lua
--!include place.lua
--!include promote.lua

local given_now = now_arg(1)
if #ARGV % 2 ~= 1 then
    refuse(#ARGV, 'expected now then pairs of set and member')
end
for i = 2, #ARGV, 2 do
    if ARGV[i] ~= 'scheduled' and ARGV[i] ~= 'retrying' then
        refuse(i, "the set must be 'scheduled' or 'retrying'")
    end
end
local bad = refused('job_promote_due')
if bad then
    return bad
end

local SETS = {
    scheduled = {K_SCHEDULED, K_SCHEDULED_BY_SEQ},
    retrying = {K_RETRYING, K_RETRYING_BY_SEQ},
}
local now = clock(given_now)
group_now = now
local moved = 0
for i = 2, #ARGV, 2 do
    local set = SETS[ARGV[i]]
    local score = redis.call('ZSCORE', set[1], ARGV[i + 1])
    if score and tonumber(score) <= now and promote_member(set[1], set[2], ARGV[i + 1]) then
        moved = moved + 1
    end
end
save_tail()
if moved > 0 then
    wake()
end
return moved
