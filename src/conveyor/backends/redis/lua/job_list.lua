-- job_list: the newest jobs of some states of one queue below a sequence number, read from the
-- states' listing indexes (keyset pagination: a page costs its size and a logarithm).
--
-- KEYS[1] jobs: prefix of the queue's job hashes (job key = prefix .. id)
-- KEYS[2] active: zset of leased jobs (few: read whole, as active jobs have no index)
-- KEYS[3] queued_by_seq: listing index of queued jobs (score seq, member id)
-- KEYS[4] scheduled_by_seq: listing index of scheduled jobs
-- KEYS[5] retrying_by_seq: listing index of retrying jobs
-- KEYS[6] completed_by_seq: listing index of completed jobs
-- KEYS[7] failed_by_seq: listing index of failed jobs
-- KEYS[8] cancelled_by_seq: listing index of cancelled jobs
-- ARGV[1] limit: most jobs to return per state
-- ARGV[2] name: only jobs of this name ('' for any)
-- ARGV[3] scan: most index entries to read per state when filtering by name
-- ARGV[4..] pairs of state and before (a sequence number: only jobs below it; '' for any)
-- Returns: per pair, in order, {next, {seq, id}, {seq, id} ...}: its newest matches, newest
-- first, and ``next``: the sequence number to continue below when a name filter read ``scan``
-- entries without finding ``limit`` matches, else ''; or an error reply when an argument is
-- invalid.
-- Guarantees: reads only. Without a name, each state costs one range read of at most
-- ``limit`` entries; with one, at most ``scan`` entries and job names, so that listing never
-- blocks the server for long however large the queue is.

local K_JOBS = KEYS[1]
local K_ACTIVE = KEYS[2]
local K_QUEUED_BY_SEQ = KEYS[3]
local K_SCHEDULED_BY_SEQ = KEYS[4]
local K_RETRYING_BY_SEQ = KEYS[5]
local K_COMPLETED_BY_SEQ = KEYS[6]
local K_FAILED_BY_SEQ = KEYS[7]
local K_CANCELLED_BY_SEQ = KEYS[8]

--!include common.lua
--!include args.lua

local INDEXES = {
    scheduled = K_SCHEDULED_BY_SEQ,
    queued = K_QUEUED_BY_SEQ,
    retrying = K_RETRYING_BY_SEQ,
    completed = K_COMPLETED_BY_SEQ,
    failed = K_FAILED_BY_SEQ,
    cancelled = K_CANCELLED_BY_SEQ,
    active = K_ACTIVE,
}
local limit = number_arg(1, 1, 10000, true, 'limit must be a whole number from 1 to 10000')
local scan = number_arg(3, 1, 10000, true, 'scan must be a whole number from 1 to 10000')
if #ARGV % 2 ~= 1 then
    refuse(#ARGV, 'expected 3 arguments then pairs of state and before')
end
for i = 4, #ARGV - 1, 2 do
    if not INDEXES[ARGV[i]] then
        refuse(i, 'the state is unknown')
    end
    if ARGV[i + 1] ~= '' then
        number_arg(i + 1, 0, 2 ^ 53, true, "before must be '' or a sequence number")
    end
end
local bad = refused('job_list')
if bad then
    return bad
end

local name = ARGV[2]

local function named(id)
    return name == '' or redis.call('HGET', K_JOBS .. id, 'n') == name
end

-- The active jobs below ``before``, newest first, at most ``limit``.
local function active_below(before)
    local found = {}
    for _, member in ipairs(redis.call('ZRANGE', K_ACTIVE, 0, -1)) do
        local seq = tonumber(string.sub(member, 1, 16))
        local id = string.sub(member, 17)
        if seq and (before == nil or seq < before) and named(id) then
            found[#found + 1] = {seq, id}
        end
    end
    table.sort(found, function(a, b) return a[1] > b[1] end)
    local out = {''}
    for i = 1, math.min(limit, #found) do
        out[#out + 1] = {int(found[i][1]), found[i][2]}
    end
    return out
end

-- The indexed jobs of ``index`` below ``before``, newest first, at most ``limit``.
local function indexed_below(index, before)
    local upper = '+inf'
    if before ~= nil then
        upper = '(' .. int(before)
    end
    local count = limit
    if name ~= '' then
        count = scan
    end
    local entries = redis.call('ZRANGE', index, upper, '-inf', 'BYSCORE', 'REV',
        'LIMIT', 0, count, 'WITHSCORES')
    local out = {''}
    local last = nil
    for i = 1, #entries, 2 do
        local id = entries[i]
        last = tonumber(entries[i + 1])
        if named(id) then
            out[#out + 1] = {int(last), id}
            if #out > limit then
                return out
            end
        end
    end
    if name ~= '' and #entries == 2 * count then
        out[1] = int(last)  -- the slice was full: more may match further down
    end
    return out
end

local result = {}
for i = 4, #ARGV, 2 do
    local before = tonumber(ARGV[i + 1])
    if ARGV[i] == 'active' then
        result[#result + 1] = active_below(before)
    else
        result[#result + 1] = indexed_below(INDEXES[ARGV[i]], before)
    end
end
return result
