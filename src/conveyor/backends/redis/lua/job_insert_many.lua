-- job_insert_many: insert new jobs into one queue; an id that exists is left untouched.
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
-- KEYS[12..] others: job key prefixes of the other queues an id must not exist in (standalone
--            Redis only; on a cluster they live on other nodes and are checked beforehand)
-- ARGV[1] now: epoch seconds, or '' for the server clock
-- ARGV[2] n: number of jobs; then 7 arguments per job:
--         id, name, payload, priority, max_attempts, run_at ('' = now + delay), delay
-- Returns: per job, in order, its state, after a '!' when it is a duplicate (not inserted).
-- Guarantees: atomic; a duplicate id (here, in another queue passed as KEYS[12..], or earlier in
-- the same batch) keeps its first job; new queued jobs wake one idle worker. Every id is checked
-- before anything is written: a job key holding something other than a job hash fails the whole
-- call with an error naming it, writing nothing.

--!include common.lua
--!include keys.lua
--!include wake.lua
--!include place.lua
--!include seq.lua

local now = clock(ARGV[1])
local n = tonumber(ARGV[2])
local out = {}
local seq = nil
local woken = false
local last_run_at, last_text = nil, nil  -- jobs of one batch mostly share their run time

-- The state of an existing job with this id (here, then in the other queues), or nil.
local function existing_state(id)
    for k = 1, #KEYS do
        if k == 1 or k >= 12 then
            local state = redis.pcall('HGET', KEYS[k] .. id, 's')
            if type(state) == 'table' and state.err then
                return redis.error_reply('job key ' .. KEYS[k] .. id .. ' is not a job hash: '
                    .. state.err)
            end
            if state then
                return state
            end
        end
    end
    return nil
end

local found = {}
for i = 0, n - 1 do
    local state = existing_state(ARGV[3 + i * 7])
    if type(state) == 'table' then
        return state  -- the error, before anything was written
    end
    found[i] = state or false
end

local inserted = {}  -- ids inserted by this call (a later duplicate in the batch sees them)
for i = 0, n - 1 do
    local base = 3 + i * 7
    local id = ARGV[base]
    local key = K_JOBS .. id
    local existing = found[i] or inserted[id]
    if existing then
        out[#out + 1] = '!' .. existing
    else
        if seq == nil then
            seq = next_seq(n)
        else
            seq = seq + 1
        end
        local priority = tonumber(ARGV[base + 3])
        local run_at = ARGV[base + 5]
        if run_at == '' then
            run_at = now + tonumber(ARGV[base + 6])
        else
            run_at = tonumber(run_at)
        end
        local state = 'queued'
        if run_at > now then
            state = 'scheduled'
        end
        if run_at ~= last_run_at then
            last_run_at, last_text = run_at, when(run_at)
        end
        local fields = {'n', ARGV[base + 1], 'd', ARGV[base + 2], 's', state,
            'm', ARGV[base + 4], 'r', last_text, 'q', int(seq)}
        if priority ~= 0 then
            fields[#fields + 1] = 'p'
            fields[#fields + 1] = int(priority)
        end
        if run_at ~= now then
            fields[#fields + 1] = 'e'
            fields[#fields + 1] = when(now)
        end
        redis.call('HSET', key, unpack(fields))
        if state == 'queued' then
            place(id, priority, run_at, seq)
            woken = true
        else
            redis.call('ZADD', K_SCHEDULED, num(run_at), smember(seq, id))
        end
        out[#out + 1] = state
        inserted[id] = state
    end
end

settle(woken)
return out
