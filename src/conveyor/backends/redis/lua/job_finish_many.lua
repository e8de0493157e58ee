-- job_finish_many: apply completions and failures to leased jobs of one queue, each fenced by
-- its lease token, then trim completed jobs beyond the retention count.
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
-- ARGV[1] now: epoch seconds, or '' for the server clock
-- ARGV[2] keep: completed jobs to keep in this queue, '' to keep all
-- ARGV[3] n: number of finishes; then 7 arguments per finish:
--         id, token, kind (complete|retry|snooze|fail|cancel|requeue), result (optional),
--         error (optional), run_at (optional), error if a pending cancel turns it into a
--         cancellation
--         (optional arguments are '' for none, else '=' followed by the value)
-- Returns: per finish, in order: 'ok', 'lease_lost' or 'not_found'.
-- Guarantees: atomic; a finish whose token is not the job's current one changes nothing; a
-- retry, snooze or requeue of a job someone asked to cancel cancels it instead; completing
-- deletes the oldest completed jobs beyond ``keep`` (up to 1,000 a call; maintenance prunes
-- whatever is left); a requeued job wakes one idle worker.

--!include common.lua
--!include keys.lua
--!include wake.lua
--!include run_at.lua
--!include place.lua

local now = clock(ARGV[1])
local keep = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local out = {}
local completed = false
local woken = false

local RUNS_AGAIN = {retry = true, snooze = true, requeue = true}
local TRIM_BATCH = 1000

-- Optional arguments travel as '' (absent) or '=' followed by the value.
local function opt(arg)
    if arg == '' then
        return nil
    end
    return string.sub(arg, 2)
end
local RELEASED = {'t', 'x', 'w', 'c'}

-- End the job in terminal ``state``; ``err`` nil keeps its previous error.
local function finish(key, id, seq, state, result, err)
    redis.call('HDEL', key, 'res', unpack(RELEASED))
    local fields = {'s', state, 'f', num(now)}
    if result then
        fields[#fields + 1] = 'res'
        fields[#fields + 1] = result
    end
    if err then
        fields[#fields + 1] = 'err'
        fields[#fields + 1] = err
    end
    redis.call('HSET', key, unpack(fields))
    redis.call('ZADD', state_set(state), num(now), smember(seq, id))
end

for i = 0, n - 1 do
    local base = 4 + i * 7
    local id = ARGV[base]
    local kind = ARGV[base + 2]
    local key = K_JOBS .. id
    local v = redis.call('HMGET', key, 's', 't', 'q', 'c', 'a', 'p', 'r')
    if not v[1] then
        out[#out + 1] = 'not_found'
    elseif v[1] ~= 'active' or v[2] ~= ARGV[base + 1] then
        out[#out + 1] = 'lease_lost'
    else
        local seq = tonum(v[3], 0)
        local err = opt(ARGV[base + 4])
        local run_at = opt(ARGV[base + 5])
        redis.call('ZREM', K_ACTIVE, smember(seq, id))
        if v[4] and RUNS_AGAIN[kind] then
            finish(key, id, seq, 'cancelled', nil, opt(ARGV[base + 6]))
        elseif kind == 'complete' then
            finish(key, id, seq, 'completed', opt(ARGV[base + 3]), nil)
            completed = true
        elseif kind == 'fail' then
            finish(key, id, seq, 'failed', nil, err)
        elseif kind == 'cancel' then
            finish(key, id, seq, 'cancelled', nil, err)
        else
            redis.call('HDEL', key, unpack(RELEASED))
            if kind == 'retry' then
                move_run_at(key, when(tonumber(run_at)))
                if err then
                    redis.call('HSET', key, 's', 'retrying', 'err', err)
                else
                    redis.call('HDEL', key, 'err')
                    redis.call('HSET', key, 's', 'retrying')
                end
                redis.call('ZADD', K_RETRYING, run_at, smember(seq, id))
            else
                local attempt = math.max(tonum(v[5], 0) - 1, 0)
                if attempt == 0 then
                    redis.call('HDEL', key, 'a')
                else
                    redis.call('HSET', key, 'a', int(attempt))
                end
                if kind == 'snooze' then
                    move_run_at(key, when(tonumber(run_at)))
                    redis.call('HSET', key, 's', 'scheduled')
                    redis.call('ZADD', K_SCHEDULED, run_at, smember(seq, id))
                else
                    redis.call('HSET', key, 's', 'queued')
                    place(id, tonum(v[6], 0), seconds(v[7]) or 0, seq)
                    woken = true
                end
            end
        end
        out[#out + 1] = 'ok'
    end
end

if completed and keep then
    -- At most TRIM_BATCH per call, so that a retention lowered on a large queue cannot block the
    -- server; maintenance prunes the rest.
    local excess = math.min(redis.call('ZCARD', K_COMPLETED) - keep, TRIM_BATCH)
    if excess > 0 then
        local popped = redis.call('ZPOPMIN', K_COMPLETED, excess)
        for i = 1, #popped, 2 do  -- member, score pairs
            redis.call('DEL', K_JOBS .. string.sub(popped[i], 17))
        end
    end
end
settle(woken)
return out
