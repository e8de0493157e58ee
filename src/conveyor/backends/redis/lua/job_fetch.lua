-- job_fetch: lease the first runnable jobs of one queue (or, in peek mode, only report them).
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
-- KEYS[12] receipt: this call's receipt (string), so that a retried call returns the same jobs
-- ARGV[1] now: epoch seconds, or '' for the server clock
-- ARGV[2] limit: most jobs to lease
-- ARGV[3] lease_seconds
-- ARGV[4] worker_id
-- ARGV[5] token_base: random text; each lease token is this plus a counter
-- ARGV[6] mode: 'lease', 'peek', or 'release' (give back what the lease call with this receipt
--         leased: its caller will never see the reply)
-- ARGV[7] promote_budget: most due jobs to promote first
-- Returns: {now, next_due or '', jobs}. Lease mode: jobs are {id, field values in JOB_FIELDS
-- order}. Peek mode: jobs are {priority, run at µs, seq, id}, nothing is changed but promotion.
-- Release mode: jobs is empty.
-- Guarantees: a paused queue returns nothing and is not touched; otherwise due scheduled and
-- retrying jobs become queued first, then the first ``limit`` queued jobs (priority, run time,
-- seq) become active with attempt + 1, a new token and a lease; if queued jobs remain, the wake
-- marker is put back for the next idle worker. A job hash that is gone is skipped. A call
-- repeated with the same receipt (after a lost reply) leases nothing new and returns the jobs
-- the first call leased. Release mode puts the receipt's jobs that still hold its leases back
-- in the queue with their attempt given back, as if never fetched.

--!include common.lua
--!include keys.lua
--!include fields.lua
--!include wake.lua
--!include place.lua
--!include take.lua
--!include promote.lua

local now = clock(ARGV[1])
local limit = tonumber(ARGV[2])
local lease = tonumber(ARGV[3])
local worker = ARGV[4]
local base = ARGV[5]
local mode = ARGV[6]

local function due_text()
    local at = next_due()
    if at == nil then
        return ''
    end
    return num(at)
end

-- A job's fields, or nil when its key is gone or holds something else (a foreign producer's
-- key must not stop the queue: the id is dropped, as for a job hash that is gone).
local function fields_of(key)
    local v = redis.pcall('HMGET', key, unpack(JOB_FIELDS))
    if v.err or not v[F_STATE] then
        return nil
    end
    return v
end

-- Whether job ``v`` is still leased with a token of this call's receipt.
local function still_ours(v)
    return v and v[F_STATE] == 'active' and v[F_TOKEN]
        and string.sub(v[F_TOKEN], 1, #base) == base
end

local RELEASED = 'released'

if mode == 'release' then
    local receipt = redis.call('GET', KEYS[12])
    if receipt and receipt ~= RELEASED then
        for _, id in ipairs(cjson.decode(receipt)) do
            local key = K_JOBS .. id
            local v = fields_of(key)
            if still_ours(v) then
                local seq = tonum(v[F_SEQ], 0)
                redis.call('ZREM', K_ACTIVE, smember(seq, id))
                redis.call('HDEL', key, 't', 'x', 'w', 'c')
                if v[F_CANCEL] then
                    -- A cancel came in meanwhile: the job must not run again.
                    redis.call('HDEL', key, 'res')
                    redis.call('HSET', key, 's', 'cancelled', 'f', num(now), 'err', 'cancelled')
                    redis.call('ZADD', K_CANCELLED, num(now), smember(seq, id))
                else
                    local attempt = math.max(tonum(v[F_ATTEMPT], 1) - 1, 0)
                    redis.call('HSET', key, 's', 'queued', 'a', int(attempt))
                    place(id, tonum(v[F_PRIORITY], 0), seconds(v[F_RUN_AT]) or 0, seq)
                end
            end
        end
        save_tail()
        wake()
    end
    -- A tombstone: should this call's lease still arrive (sent behind a blocking pop that a
    -- marker wakes later), it leases nothing.
    redis.call('SET', KEYS[12], RELEASED, 'PX', int(math.max(tonumber(ARGV[3]), 1) * 1000))
    return {num(now), '', {}}
end

if mode == 'lease' then
    local receipt = redis.call('GET', KEYS[12])
    if receipt == RELEASED then
        return {num(now), '', {}}
    end
    if receipt then  -- a repeated call: the jobs the first one leased, if they are still its
        local jobs = {}
        for _, id in ipairs(cjson.decode(receipt)) do
            local v = fields_of(K_JOBS .. id)
            if still_ours(v) then
                jobs[#jobs + 1] = {id, unpack(v)}
            end
        end
        return {num(now), due_text(), jobs}
    end
end

if redis.call('HGET', K_META, 'paused') == '1' then
    return {num(now), '', {}}  -- nothing here will run until it resumes, which wakes workers
end
if limit <= 0 then
    return {num(now), due_text(), {}}
end
promote_due(now, tonumber(ARGV[7]))

if mode == 'peek' then
    save_tail()
    return {num(now), due_text(), peek(limit)}
end

local jobs = {}
local leased = {}
local expires = num(now + lease)
local started = num(now)
for _, id in ipairs(take(limit)) do
    local key = K_JOBS .. id
    local v = fields_of(key)
    if v then
        local token = base .. string.format('%x', #jobs)
        local attempt = int(tonum(v[F_ATTEMPT], 0) + 1)
        redis.call('HSET', key, 's', 'active', 'a', attempt, 'b', started, 't', token,
            'x', expires, 'w', worker)
        if v[F_CANCEL] then
            redis.call('HDEL', key, 'c')
        end
        redis.call('ZADD', K_ACTIVE, expires, smember(tonum(v[F_SEQ], 0), id))
        v[F_STATE], v[F_ATTEMPT], v[F_STARTED], v[F_TOKEN], v[F_EXPIRES], v[F_WORKER], v[F_CANCEL] =
            'active', attempt, started, token, expires, worker, false
        jobs[#jobs + 1] = {id, unpack(v)}
        leased[#leased + 1] = id
    end
end

save_tail()
if #leased > 0 then
    redis.call('SET', KEYS[12], cjson.encode(leased), 'PX', int(math.max(lease, 1) * 1000))
end
if redis.call('LLEN', K_READY) > 0 or redis.call('ZCARD', K_QUEUED) > 0 then
    wake()
end
return {num(now), due_text(), jobs}
