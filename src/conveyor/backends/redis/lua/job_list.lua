-- job_list: scan one slice of one structure of one queue for jobs to list, newest first.
--
-- KEYS[1] jobs: prefix of the queue's job hashes (job key = prefix .. id)
-- KEYS[2] meta: the queue's meta hash
-- KEYS[3] ready: list of in-order priority-0 queued jobs
-- KEYS[4] queued: zset of the other queued jobs
-- KEYS[5] scheduled: zset of jobs waiting for their run time
-- KEYS[6] retrying: zset of jobs waiting to be retried
-- KEYS[7] active: zset of leased jobs
-- KEYS[8] completed: zset of completed jobs
-- KEYS[9] failed: zset of failed jobs
-- KEYS[10] cancelled: zset of cancelled jobs
-- KEYS[11] wake: list idle workers block on
-- ARGV[1] source: 'ready' (the ready list), 'queued' or another state's set
-- ARGV[2] start: index of the first entry of the slice
-- ARGV[3] count: entries in the slice
-- ARGV[4] before_seq: only jobs with a smaller sequence number ('' for any)
-- ARGV[5] name: only jobs of this name ('' for any)
-- ARGV[6] top: most matches to return
-- Returns: {next start or -1 when the structure is exhausted, {seq, id} ... for the top
-- matches of the slice with the highest sequence numbers}.
-- Guarantees: reads only; one bounded slice per call so that listing a large queue never
-- blocks the server for long.

--!include common.lua
--!include keys.lua

local source = ARGV[1]
local start = tonumber(ARGV[2])
local count = tonumber(ARGV[3])
local before_seq = tonumber(ARGV[4])
local name = ARGV[5]
local top = tonumber(ARGV[6])

local entries
if source == 'ready' then
    entries = redis.call('LRANGE', K_READY, start, start + count - 1)
elseif source == 'queued' then
    entries = redis.call('ZRANGE', K_QUEUED, start, start + count - 1)
else
    entries = redis.call('ZRANGE', state_set(source), start, start + count - 1)
end

local found = {}
for _, entry in ipairs(entries) do
    local id, seq
    if source == 'ready' then
        id = entry
        seq = tonumber(redis.call('HGET', K_JOBS .. id, 'q'))
    elseif source == 'queued' then
        id = string.sub(entry, 33)
        seq = tonumber(string.sub(entry, 17, 32))
    else
        id = string.sub(entry, 17)
        seq = tonumber(string.sub(entry, 1, 16))
    end
    if seq and (before_seq == nil or seq < before_seq)
        and (name == '' or redis.call('HGET', K_JOBS .. id, 'n') == name) then
        found[#found + 1] = {seq, id}
    end
end
table.sort(found, function(a, b) return a[1] > b[1] end)
local out = {}
for i = 1, math.min(top, #found) do
    out[i] = {int(found[i][1]), found[i][2]}
end
local next_start = start + count
if #entries < count then
    next_start = -1
end
return {next_start, out}
