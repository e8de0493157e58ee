-- job_fetch: lease the first runnable jobs of one queue (or, in peek mode, only report them).
--
-- KEYS[1] jobs: prefix of the queue's job hashes (job key = prefix .. id)
-- KEYS[2] meta: the queue's meta hash (paused flag, the ready list's tail)
-- KEYS[3] ready: list of in-order priority-0 queued jobs
-- KEYS[4] queued: zset of the other queued jobs
-- KEYS[5] dead: hash of id -> stale ready-list entries of that job (see take.lua)
-- KEYS[6] scheduled: zset of jobs waiting for their run time
-- KEYS[7] retrying: zset of jobs waiting to be retried
-- KEYS[8] active: zset of leased jobs, score the lease expiry (and ACTIVE_SENTINEL, see
--         members.lua)
-- KEYS[9] cancelled: zset of cancelled jobs (a release may cancel)
-- KEYS[10] wake: list idle workers block on
-- KEYS[11] queued_by_seq: listing index of the queued set's jobs (the ready list needs none)
-- KEYS[12] scheduled_by_seq: listing index of scheduled jobs
-- KEYS[13] retrying_by_seq: listing index of retrying jobs
-- KEYS[14] cancelled_by_seq: listing index of cancelled jobs
-- KEYS[15] rate_log: list of the start times of the queue's last starts, oldest first (the
--          sliding log of its rate limit: at most ARGV[10] entries are kept)
-- KEYS[16] rate_block: string, the time a handler's RateLimited blocked the queue until
-- KEYS[17] groups: prefix of the keys of the queue's groups (see groups.lua)
-- KEYS[18] ring: zset of the groups with queued jobs and room, score their turn
-- KEYS[19] group_idle: zset of the groups that hold no job, score when their record may go
-- KEYS[20] group_records: hash of group key -> its record (see groups.lua)
-- KEYS[21] receipt: this call's receipt (string), so that a retried call returns the same jobs
-- KEYS[22] previous_receipt: the receipt of the caller's previous fetch of this queue, to delete
-- ARGV[1] now: epoch seconds, or '' for the server clock
-- ARGV[2] limit: most jobs to lease
-- ARGV[3] lease_seconds
-- ARGV[4] worker_id
-- ARGV[5] token_base: random text; each lease token is this plus a counter
-- ARGV[6] mode: 'lease', 'peek', or 'release' (give back what the lease call with this receipt
--         leased: its caller will never see the reply)
-- ARGV[7] promote_budget: most due jobs to promote first
-- ARGV[8] receipt_ttl: milliseconds a receipt is kept (beyond any retry of the call)
-- ARGV[9] forget_previous: '1' to delete KEYS[22], '' when there is none
-- ARGV[10] rate_count: most starts in any window of ARGV[11] seconds, '' for no rate limit
-- ARGV[11] rate_per: the window of the rate limit, seconds ('' without one)
-- Returns: {now, next_due or '', jobs, dropped}. Lease mode: jobs are {id, field values in
-- JOB_FIELDS order}. Peek mode: jobs are {priority, run at µs, seq, id}, nothing is changed but
-- promotion. Release mode: jobs is empty. dropped: {id, why} of each queue entry that was
-- taken but named no queued job (its key gone or not a hash, or the job in another state),
-- removed so that it cannot block the queue. An error reply, having written nothing, when an
-- argument is invalid.
-- Guarantees: a paused queue returns nothing and is not touched; otherwise due scheduled and
-- retrying jobs become queued first, then the first ``limit`` queued jobs (priority, run time,
-- seq) become active with attempt + 1, a new token, a lease, no pending cancel and no isolated
-- mark; if queued jobs remain, the wake marker is put back for the next idle worker. Under a
-- rate limit, no more jobs are leased (or peeked) than the k oldest of the last ARGV[10] logged
-- starts allow (each at least ARGV[11] old; none while the block lasts), their starts are
-- logged (stamped no earlier than the newest entry), and a queue the limit holds is not woken:
-- its workers ask when the window slides (rate_limit_wait) instead. A call
-- repeated with the same receipt (after a lost reply) leases nothing new and returns the jobs
-- the first call leased. Release mode puts the receipt's jobs that still hold its leases back
-- in the queue with their attempt given back and no token, as if never fetched (or cancels
-- them, if a cancel came in meanwhile). Grouped jobs are served by group (serve.lua), sharing
-- ``limit`` with plain jobs as conveyor.drivers.groups.split_limit says (the coin is a bit of
-- the random token base); a queue without groups pays one read of an empty ring for it. Work
-- per call is bounded by ``limit``, the promote budget and the stale-entry budgets of take.lua
-- and serve.lua, never by the queue's length or its number of groups.

local K_JOBS = KEYS[1]
local K_META = KEYS[2]
local K_READY = KEYS[3]
local K_QUEUED = KEYS[4]
local K_DEAD = KEYS[5]
local K_SCHEDULED = KEYS[6]
local K_RETRYING = KEYS[7]
local K_ACTIVE = KEYS[8]
local K_CANCELLED = KEYS[9]
local K_WAKE = KEYS[10]
local K_QUEUED_BY_SEQ = KEYS[11]
local K_SCHEDULED_BY_SEQ = KEYS[12]
local K_RETRYING_BY_SEQ = KEYS[13]
local K_CANCELLED_BY_SEQ = KEYS[14]
local K_RATE_LOG = KEYS[15]
local K_RATE_BLOCK = KEYS[16]
local K_GROUPS = KEYS[17]
local K_RING = KEYS[18]
local K_GROUP_IDLE = KEYS[19]
local K_GROUP_RECORDS = KEYS[20]
local K_RECEIPT = KEYS[21]
local K_PREVIOUS_RECEIPT = KEYS[22]

--!include fields.lua
--!include active.lua
--!include fetch_early.lua
--!include common.lua
--!include args.lua
--!include members.lua
--!include field_edits.lua
--!include wake.lua
--!include groups.lua
--!include place.lua
--!include take.lua
--!include serve.lua
--!include promote.lua
--!include rates.lua

local given_now = now_arg(1)
local mode = ARGV[6]
local limit = number_arg(2, -MAX_BATCH, MAX_BATCH, true, 'limit must be a whole number')
local lease = number_arg(3, 0, MAX_SECONDS, false,
    'lease_seconds must be seconds from 0 to 3153600000')
if ARGV[5] == '' then
    refuse(5, 'token_base must not be empty')
end
if not (mode == 'lease' or mode == 'peek' or mode == 'release') then
    refuse(6, "mode must be 'lease', 'peek' or 'release'")
end
local budget = number_arg(7, 0, MAX_BATCH, true, 'promote_budget must be a whole number from 0')
local receipt_ttl = number_arg(8, 1, MAX_SECONDS * 1000, true,
    'receipt_ttl must be whole milliseconds from 1')
if ARGV[9] ~= '' and ARGV[9] ~= '1' then
    refuse(9, "forget_previous must be '' or '1'")
end
if #ARGV ~= 11 then
    refuse(#ARGV, 'expected 11 arguments')
end
local rate_count, rate_per = rate_args(10)
local bad = refused('job_fetch')
if bad then
    return bad
end

local now = clock(given_now)
group_now = now
local forget_previous = ARGV[9] == '1'
local worker = ARGV[4]
local base = ARGV[5]
local RELEASED = 'released'

local function due_text()
    local at = next_due()
    if at == nil then
        return ''
    end
    return num(at)
end

-- A job's fields, or nil when its key is gone or holds something else (a foreign producer's
-- key must not stop the queue: the id is dropped).
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

if mode == 'release' then
    local receipt = redis.call('GET', K_RECEIPT)
    if receipt and receipt ~= RELEASED then
        for _, id in ipairs(cjson.decode(receipt)) do
            local key = K_JOBS .. id
            local v = fields_of(key)
            if still_ours(v) then
                local seq = tonum(v[F_SEQ], 0)
                redis.call('ZREM', K_ACTIVE, smember(seq, id))
                if v[F_GROUP] then
                    group_leave(v[F_GROUP])
                end
                redis.call('HDEL', key, 't', 'x', 'w', 'c', 'i')
                if v[F_CANCEL] then
                    -- A cancel came in meanwhile: the job must not run again.
                    redis.call('HDEL', key, 'res')
                    redis.call('HSET', key, 's', 'cancelled', 'f', num(now), 'err', 'cancelled')
                    redis.call('ZADD', K_CANCELLED, num(now), smember(seq, id))
                    redis.call('ZADD', K_CANCELLED_BY_SEQ, int(seq), id)
                else
                    local fields, gone = {'s', 'queued'}, {}
                    give_back_attempt(fields, gone, v[F_ATTEMPT])
                    redis.call('HSET', key, unpack(fields))
                    if #gone > 0 then
                        redis.call('HDEL', key, unpack(gone))
                    end
                    local limits = v[F_GROUP] and redis.call('HGET', key, 'gl')
                    place(id, tonum(v[F_PRIORITY], 0), seconds(v[F_RUN_AT]) or 0, seq,
                        v[F_GROUP], limits)
                end
            end
        end
        save_tail()
        wake()
    end
    -- A tombstone: should this call's lease still arrive (sent behind a blocking pop that a
    -- marker wakes later), it leases nothing.
    redis.call('SET', K_RECEIPT, RELEASED, 'PX', int(receipt_ttl))
    return {num(now), '', {}, {}}
end

if mode == 'lease' then
    if forget_previous then
        redis.call('DEL', K_PREVIOUS_RECEIPT)
    end
    local receipt = redis.call('GET', K_RECEIPT)
    if receipt == RELEASED then
        return {num(now), '', {}, {}}
    end
    if receipt then  -- a repeated call: the jobs the first one leased, if they are still its
        local jobs = {}
        for _, id in ipairs(cjson.decode(receipt)) do
            local v = fields_of(K_JOBS .. id)
            if still_ours(v) then
                jobs[#jobs + 1] = {id, unpack(v)}
            end
        end
        return {num(now), due_text(), jobs, {}}
    end
end

if redis.call('HGET', K_META, 'paused') == '1' then
    return {num(now), '', {}, {}}  -- nothing here will run until it resumes, which wakes workers
end
if limit <= 0 then
    return {num(now), due_text(), {}, {}}
end
promote_due(now, budget)
save_tail()  -- the promoted jobs' appends, before peek() or take() reads the list

-- The rate limit: how many of the ``limit`` asked for may start now. Reads at most ``limit``
-- entries of the log (its oldest), never the whole of it.
local held = false
if rate_count then
    local allowed = rate_allowed(now, rate_count, rate_per, limit)
    if allowed < limit then
        limit, held = allowed, true
    end
    if limit <= 0 then
        return {num(now), due_text(), {}, {}}
    end
end

-- The one look a queue without groups pays (its ring is empty): the groups whose turn is here.
local ring = redis.call('ZRANGEBYSCORE', K_RING, '-inf', ring_score(now), 'LIMIT', 0, limit)
local grouped = #ring > 0

if mode == 'peek' then
    local out = peek(limit)
    if grouped then
        for _, row in ipairs(peek_groups(limit, now)) do
            out[#out + 1] = row
        end
    end
    return {num(now), due_text(), out, {}}
end

local jobs = {}
local leased = {}
local dropped = {}
local active = {}  -- score, member pairs for K_ACTIVE: one ZADD for the batch
local expires = num(now + lease)
local started = num(now)
local taken
local group_of = {}  -- id -> group of the grouped jobs taken
if grouped then
    -- split_limit: half to groups when plain jobs wait too (a coin toss for a limit of 1),
    -- whatever one side leaves to the other.
    local plain = redis.call('LLEN', K_READY) > 0 or redis.call('ZCARD', K_QUEUED) > 0
    local first = limit
    if plain and limit == 1 then
        first = (tonumber(string.sub(base, -1), 16) or 0) % 2
    elseif plain then
        first = math.floor((limit + 1) / 2)
    end
    local served = {}
    if first > 0 then
        for i = first + 1, #ring do  -- the first ``first`` groups of the ring read above
            ring[i] = nil
        end
        served, group_of = serve_groups(first, now, ring)
    end
    taken = take(limit - #served)
    for _, id in ipairs(served) do
        taken[#taken + 1] = id
    end
    if #taken < limit then
        local more, more_of = serve_groups(limit - #taken, now, nil)
        for _, id in ipairs(more) do
            taken[#taken + 1] = id
            group_of[id] = more_of[id]
        end
    end
else
    taken = take(limit)
end
-- Each taken job is read whole (HGETALL: one pass over the few fields it stores) and its reply
-- row filled by field name, where an HMGET of all 28 fields looked each one up, mostly absent,
-- and the row was copied from its reply: 11 % fewer server instructions per drained job with
-- the finish's lighter read (bench/script_cost.py under callgrind, PROFILE-drain.md).
local ROW_AT = {}  -- field name -> its place in a reply row ({id, JOB_FIELDS values})
for i, name in ipairs(JOB_FIELDS) do
    ROW_AT[name] = i + 1
end
local S_AT, A_AT, Q_AT, C_AT, I_AT = 1 + F_STATE, 1 + F_ATTEMPT, 1 + F_SEQ, 1 + F_CANCEL,
    1 + F_ISOLATED
for _, id in ipairs(taken) do
    local key = K_JOBS .. id
    local h = redis.pcall('HGETALL', key)
    local row = {id, false, false, false, false, false, false, false, false, false, false,
        false, false, false, false, false, false, false, false, false, false, false, false,
        false, false, false, false, false, false}
    if not h.err then  -- a key holding something else reads as a job without fields
        for k = 1, #h, 2 do
            local at = ROW_AT[h[k]]
            if at then
                row[at] = h[k + 1]
            end
        end
    end
    local state = row[S_AT]
    if state ~= 'queued' then
        if not state then
            dropped[#dropped + 1] = {id, 'its key is gone or holds no job hash'}
        else
            dropped[#dropped + 1] = {id, 'the job is ' .. state .. ', not queued'}
        end
        if group_of[id] then
            group_leave(group_of[id])  -- counted active by serve_groups: not after all
        end
    else
        local token = base .. string.format('%x', #jobs)
        local attempt = int(tonum(row[A_AT], 0) + 1)
        redis.call('HSET', key, 's', 'active', 'a', attempt, 'b', started, 't', token,
            'x', expires, 'w', worker)
        if row[C_AT] or row[I_AT] then
            redis.call('HDEL', key, 'c', 'i')
        end
        active[#active + 1] = expires
        active[#active + 1] = smember(tonum(row[Q_AT], 0), id)
        row[S_AT], row[A_AT], row[1 + F_STARTED], row[1 + F_TOKEN], row[1 + F_EXPIRES],
            row[1 + F_WORKER] = 'active', attempt, started, token, expires, worker
        row[C_AT], row[I_AT] = false, false
        jobs[#jobs + 1] = row
        leased[#leased + 1] = id
    end
end
for i = 1, #taken, 500 do  -- unpack() is limited by Lua's stack: 500 at a time
    redis.call('ZREM', K_QUEUED_BY_SEQ, unpack(taken, i, math.min(i + 499, #taken)))
end
for i = 1, #active, 1000 do
    if i == 1 then  -- the sentinel first, so that the set is made a skiplist at once
        redis.call('ZADD', K_ACTIVE, '+inf', ACTIVE_SENTINEL,
            unpack(active, i, math.min(i + 999, #active)))
    else
        redis.call('ZADD', K_ACTIVE, unpack(active, i, math.min(i + 999, #active)))
    end
end

save_tail()
if #leased > 0 then
    redis.call('SET', K_RECEIPT, cjson.encode(leased), 'PX', int(receipt_ttl))
    if rate_count then
        local at = math.max(now, tonumber(redis.call('LINDEX', K_RATE_LOG, -1) or '') or now)
        local stamp, stamps = num(at), {}
        for i = 1, #leased do
            stamps[i] = stamp
        end
        for i = 1, #stamps, 1000 do
            redis.call('RPUSH', K_RATE_LOG, unpack(stamps, i, math.min(i + 999, #stamps)))
        end
        redis.call('LTRIM', K_RATE_LOG, -rate_count, -1)
    end
end
if not held and (redis.call('LLEN', K_READY) > 0 or redis.call('ZCARD', K_QUEUED) > 0
    or (grouped and #redis.call('ZRANGEBYSCORE', K_RING, '-inf', ring_score(now), 'LIMIT', 0, 1)
        > 0))
then
    wake()
end
return {num(now), due_text(), jobs, dropped}
