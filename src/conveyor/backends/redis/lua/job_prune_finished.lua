-- job_prune_finished: delete finished jobs of one state of one queue beyond the retention
-- policy.
--
-- KEYS[1] jobs: prefix of the queue's job hashes (job key = prefix .. id)
-- KEYS[2] set: the state's sorted set, score the finish time
-- KEYS[3] by_seq: the state's listing index
-- KEYS[4] dedup: hash of dedup key -> the record of the job holding it (see dedup.lua)
-- KEYS[5] dedup_jobs: hash of job id -> the dedup key it took
-- KEYS[6] expiring: zset of finished jobs with a retention of their own (entries of the jobs
--         deleted here go too)
-- ARGV[1] mode: 'members' (delete the members that follow, chosen by the caller oldest first
--         across queues) or 'trim' (delete the oldest beyond the newest ARGV[2] jobs, at most
--         ARGV[3] of them)
-- ARGV[2..] members, or keep and limit
-- Returns: how many jobs were deleted; or an error reply, having written nothing, when an
-- argument is invalid.
-- Guarantees: atomic; only members still in the set are deleted, with the dedup records they
-- hold.

local K_JOBS = KEYS[1]
local K_SET = KEYS[2]
local K_BY_SEQ = KEYS[3]
local K_DEDUP = KEYS[4]
local K_DEDUP_JOBS = KEYS[5]
local K_EXPIRING = KEYS[6]

--!include args.lua
--!include dedup.lua

local mode = ARGV[1]
if mode == 'trim' then
    number_arg(2, 0, 1e15, true, 'keep must be a whole number from 0')
    number_arg(3, 0, 10000, true, 'limit must be a whole number from 0 to 10000')
    if #ARGV ~= 3 then
        refuse(#ARGV, 'expected 3 arguments')
    end
elseif mode ~= 'members' then
    refuse(1, "the mode must be 'members' or 'trim'")
end
local bad = refused('job_prune_finished')
if bad then
    return bad
end

local gone, members = {}, {}
if mode == 'trim' then
    local excess = math.min(redis.call('ZCARD', K_SET) - tonumber(ARGV[2]), tonumber(ARGV[3]))
    if excess > 0 then
        local popped = redis.call('ZPOPMIN', K_SET, excess)
        for i = 1, #popped, 2 do
            gone[#gone + 1] = string.sub(popped[i], 17)
            members[#members + 1] = popped[i]
        end
    end
else
    for i = 2, #ARGV do
        if redis.call('ZREM', K_SET, ARGV[i]) == 1 then
            gone[#gone + 1] = string.sub(ARGV[i], 17)
            members[#members + 1] = ARGV[i]
        end
    end
end
for i = 1, #gone, 500 do
    local slice = {unpack(gone, i, math.min(i + 499, #gone))}
    redis.call('ZREM', K_BY_SEQ, unpack(slice))
    forget_dedup(slice, 1, #slice)
    redis.call('ZREM', K_EXPIRING, unpack(members, i, math.min(i + 499, #members)))
    for n, id in ipairs(slice) do
        slice[n] = K_JOBS .. id
    end
    redis.call('DEL', unpack(slice))
end
return #gone
