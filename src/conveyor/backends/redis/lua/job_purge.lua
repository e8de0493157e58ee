-- job_purge: delete up to chunk jobs of one state of one queue (the caller repeats until
-- nothing is left, so no single call blocks the server for long).
--
-- KEYS[1] jobs: prefix of the queue's job hashes (job key = prefix .. id)
-- KEYS[2] set: the state's sorted set (for queued: the queued set, beside the ready list)
-- KEYS[3] by_seq: the state's listing index (active has none: its key stays empty)
-- KEYS[4] ready: list of in-order priority-0 queued jobs (queued only)
-- KEYS[5] dead: hash of id -> stale ready-list entries of that job (queued only)
-- KEYS[6] meta: the queue's meta hash, for the ready list's tail (queued only)
-- KEYS[7] dedup: hash of dedup key -> the record of the job holding it (see dedup.lua)
-- KEYS[8] dedup_jobs: hash of job id -> the dedup key it took
-- KEYS[9] expiring: zset of finished jobs with a retention of their own (entries of the jobs
--         deleted here go too)
-- KEYS[10] groups: prefix of the keys of the queue's groups (see groups.lua)
-- KEYS[11] ring: zset of the groups with queued jobs and room, score their turn
-- KEYS[12] group_idle: zset of the groups that hold no job, score when their record may go
-- KEYS[13] group_records: hash of group key -> its record (see groups.lua)
-- ARGV[1] state: queued, scheduled, retrying, active, completed, failed or cancelled
-- ARGV[2] finished_before: epoch seconds ('' for any); only jobs finished before it are deleted
-- ARGV[3] chunk: most entries to remove in this call
-- Returns: {jobs deleted, entries removed}: the caller repeats while a full chunk of entries was
-- removed (a stale entry, or one whose job hash was already gone, deletes no job); or an error
-- reply, having written nothing, when an argument is invalid.
-- Guarantees: atomic per call; only jobs in ``state`` are deleted (a cancelled job's stale
-- ready-list entry is passed over and uncounted, the job left alone); a deleted job's dedup
-- record goes with it. A grouped queued job leaves its group (after the ready list and the
-- queued set are empty, the queued index holds only grouped jobs: read in chunks from there),
-- and a grouped active job frees its place in its group.

local K_JOBS = KEYS[1]
local K_SET = KEYS[2]
local K_BY_SEQ = KEYS[3]
local K_READY = KEYS[4]
local K_DEAD = KEYS[5]
local K_META = KEYS[6]
local K_DEDUP = KEYS[7]
local K_DEDUP_JOBS = KEYS[8]
local K_EXPIRING = KEYS[9]
local K_GROUPS = KEYS[10]
local K_RING = KEYS[11]
local K_GROUP_IDLE = KEYS[12]
local K_GROUP_RECORDS = KEYS[13]

--!include common.lua
--!include args.lua
--!include members.lua
--!include groups.lua
--!include dedup.lua

local state = ARGV[1]
if not (state == 'queued' or state == 'scheduled' or state == 'retrying' or state == 'active'
    or state == 'completed' or state == 'failed' or state == 'cancelled') then
    refuse(1, 'the state is unknown')
end
if ARGV[2] ~= '' then
    number_arg(2, -MAX_EPOCH, MAX_EPOCH, false, "finished_before must be '' or epoch seconds")
end
local chunk = number_arg(3, 1, 10000, true, 'chunk must be a whole number from 1 to 10000')
if #ARGV ~= 3 then
    refuse(#ARGV, 'expected 3 arguments')
end
local bad = refused('job_purge')
if bad then
    return bad
end

group_now = clock(nil)
local deleted = 0
local ids = {}  -- jobs to delete

-- Delete the jobs in ``ids`` that are still in ``state``, and their index entries.
local function delete_jobs()
    local doomed, doomed_ids, indexed = {}, {}, {}
    for _, id in ipairs(ids) do
        local found = redis.pcall('HMGET', K_JOBS .. id, 's', 'g', 'p', 'r', 'q')
        if not found.err and found[1] == state then
            if found[2] and state == 'active' then
                group_leave(found[2])
            elseif found[2] and state == 'queued' then
                group_out(found[2], qmember(seconds(found[4]) or 0, tonum(found[5], 0), id),
                    group_now)
            end
            doomed[#doomed + 1] = K_JOBS .. id
            doomed_ids[#doomed_ids + 1] = id
        end
        indexed[#indexed + 1] = id
    end
    for i = 1, #doomed, 500 do
        deleted = deleted + redis.call('DEL', unpack(doomed, i, math.min(i + 499, #doomed)))
        forget_dedup(doomed_ids, i, math.min(i + 499, #doomed_ids))
    end
    for i = 1, #indexed, 500 do
        redis.call('ZREM', K_BY_SEQ, unpack(indexed, i, math.min(i + 499, #indexed)))
    end
end

if state == 'queued' then
    local removed = 0
    local popped = redis.call('LPOP', K_READY, chunk) or {}
    removed = #popped
    if #popped > 0 then
        local counts = {}
        if redis.call('EXISTS', K_DEAD) == 1 then
            counts = redis.call('HMGET', K_DEAD, unpack(popped))
        end
        local left = {}
        for i, id in ipairs(popped) do
            if left[id] == nil then
                left[id] = tonumber(counts[i]) or 0
            end
            if left[id] > 0 then
                left[id] = left[id] - 1
                if left[id] == 0 then
                    redis.call('HDEL', K_DEAD, id)
                else
                    redis.call('HSET', K_DEAD, id, string.format('%d', left[id]))
                end
            else
                ids[#ids + 1] = id
            end
        end
    end
    if removed < chunk then
        local members = redis.call('ZPOPMIN', K_SET, chunk - removed)
        for i = 1, #members, 2 do
            ids[#ids + 1] = string.sub(members[i], 33)
        end
        removed = removed + #members / 2
    end
    if removed < chunk then
        -- What the index holds besides the queued set's jobs just taken is grouped jobs
        -- (group_out below takes them out of their groups).
        local seen = {}
        for _, id in ipairs(ids) do
            seen[id] = true
        end
        local extra = chunk - removed
        for _, id in ipairs(redis.call('ZRANGE', K_BY_SEQ, 0, #ids + extra - 1)) do
            if not seen[id] and extra > 0 then
                ids[#ids + 1] = id
                removed = removed + 1
                extra = extra - 1
            end
        end
    end
    if redis.call('LLEN', K_READY) == 0 then
        -- Empty: any job may be appended again, and no entry is stale.
        redis.call('HDEL', K_META, 'tr', 'tq')
        redis.call('DEL', K_DEAD)
    end
    delete_jobs()
    group_flush()
    return {deleted, removed}
end

local members
if ARGV[2] == '' then  -- below +inf: the active set's sentinel is no job (see members.lua)
    members = redis.call('ZRANGEBYSCORE', K_SET, '-inf', '(+inf', 'LIMIT', 0, chunk)
else
    members = redis.call('ZRANGEBYSCORE', K_SET, '-inf', '(' .. ARGV[2], 'LIMIT', 0, chunk)
end
for i = 1, #members, 500 do
    redis.call('ZREM', K_SET, unpack(members, i, math.min(i + 499, #members)))
    redis.call('ZREM', K_EXPIRING, unpack(members, i, math.min(i + 499, #members)))
end
for _, member in ipairs(members) do
    ids[#ids + 1] = string.sub(member, 17)
end
delete_jobs()
group_flush()
return {deleted, #members}
