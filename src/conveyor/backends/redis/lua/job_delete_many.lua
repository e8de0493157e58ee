-- job_delete_many: delete finished (completed, failed, cancelled) jobs of one queue by id, with
-- everything they hold elsewhere, as pruning does; leave the others alone.
--
-- KEYS[1] jobs: prefix of the queue's job hashes (job key = prefix .. id)
-- KEYS[2] completed: zset of completed jobs, score the finish time
-- KEYS[3] failed: zset of failed jobs, score the finish time
-- KEYS[4] cancelled: zset of cancelled jobs, score the finish time
-- KEYS[5] completed_by_seq: listing index of completed jobs
-- KEYS[6] failed_by_seq: listing index of failed jobs
-- KEYS[7] cancelled_by_seq: listing index of cancelled jobs
-- KEYS[8] expiring: zset of finished jobs with a retention of their own
-- KEYS[9] dedup: hash of dedup key -> the record of the job holding it (see dedup.lua)
-- KEYS[10] dedup_jobs: hash of job id -> the dedup key it took
-- ARGV[1] n: number of ids that follow
-- ARGV[2..] job ids
-- Returns: per id, in order, {status, state}: 'ok' (deleted), 'wrong_state' and the state of a
-- job that is not finished, or 'not_found' (no job hash of that id: a key holding something
-- else is not a job, and is left alone); an id named again after it was deleted is 'not_found'.
-- An error reply, having written nothing, when an argument is invalid.
-- Guarantees: atomic; every id's state is read before the first write; a deleted job leaves
-- nothing behind: its hash (result, error history, headers), its entries in its state's set,
-- listing index and the expiring set, and the dedup record it holds. A cancelled job's stale
-- ready-list entry stays counted in the dead hash (fetches pass over it), as after pruning.

local K_JOBS = KEYS[1]
local K_COMPLETED = KEYS[2]
local K_FAILED = KEYS[3]
local K_CANCELLED = KEYS[4]
local K_COMPLETED_BY_SEQ = KEYS[5]
local K_FAILED_BY_SEQ = KEYS[6]
local K_CANCELLED_BY_SEQ = KEYS[7]
local K_EXPIRING = KEYS[8]
local K_DEDUP = KEYS[9]
local K_DEDUP_JOBS = KEYS[10]

--!include args.lua
--!include members.lua
--!include dedup.lua

-- A finished state's set and listing index.
local FINISHED = {
    completed = {K_COMPLETED, K_COMPLETED_BY_SEQ},
    failed = {K_FAILED, K_FAILED_BY_SEQ},
    cancelled = {K_CANCELLED, K_CANCELLED_BY_SEQ},
}

local n = number_arg(1, 0, MAX_BATCH, true, 'the id count must be a whole number from 0')
if n and #ARGV ~= n + 1 then
    refuse(1, 'the id count must say how many ids follow')
end
local bad = refused('job_delete_many')
if bad then
    return bad
end

local NOT_FOUND = {'not_found', ''}
local out = {}
local decided = {}  -- id -> what a later mention of it in this call gets
local doomed = {}  -- ids to delete, each once
local by_state = {}  -- state -> {set members, ids} of its doomed jobs
for i = 2, #ARGV do
    local id = ARGV[i]
    local reply = decided[id]
    if reply == nil then
        local v = redis.pcall('HMGET', K_JOBS .. id, 's', 'q')
        if v.err or not v[1] then
            reply = NOT_FOUND
        elseif FINISHED[v[1]] then
            reply = {'ok', ''}
            doomed[#doomed + 1] = id
            local found = by_state[v[1]] or {{}, {}}
            found[1][#found[1] + 1] = smember(tonumber(v[2]) or 0, id)
            found[2][#found[2] + 1] = id
            by_state[v[1]] = found
        else
            reply = {'wrong_state', v[1]}
        end
        decided[id] = reply[1] == 'ok' and NOT_FOUND or reply
    end
    out[#out + 1] = reply
end

-- unpack() is limited by Lua's stack: 500 at a time.
for state, found in pairs(by_state) do
    local members, ids = found[1], found[2]
    for i = 1, #ids, 500 do
        local j = math.min(i + 499, #ids)
        redis.call('ZREM', FINISHED[state][1], unpack(members, i, j))
        redis.call('ZREM', K_EXPIRING, unpack(members, i, j))
        redis.call('ZREM', FINISHED[state][2], unpack(ids, i, j))
    end
end
for i = 1, #doomed, 500 do
    local j = math.min(i + 499, #doomed)
    forget_dedup(doomed, i, j)
    local slice = {}
    for k = i, j do
        slice[#slice + 1] = K_JOBS .. doomed[k]
    end
    redis.call('DEL', unpack(slice))
end
return out
