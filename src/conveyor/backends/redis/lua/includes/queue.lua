-- The keys of one queue, all sharing its hash tag, in the order every queue script receives them,
-- and the job hash layout.
--
-- A job hash stores short field names and omits fields at their default, so a queued job costs
-- as little memory as possible: n name, d payload, s state, p priority (0), a attempt (0),
-- m max attempts, r run at, e enqueued at (= r), q sequence, b started at, f finished at,
-- t lease token, x lease expiry, w worker id, k stalls (0), c cancel requested (absent),
-- res result, err error.

local K_JOBS = KEYS[1]       -- prefix of job hashes: the job key is this followed by the id
local K_META = KEYS[2]       -- hash: paused, seq (last sequence number issued)
local K_READY = KEYS[3]      -- list: queued priority-0 jobs in run order (the fast path)
local K_QUEUED = KEYS[4]     -- zset: every other queued job, score priority, member qmember()
local K_SCHEDULED = KEYS[5]  -- zset: score run at, member smember()
local K_RETRYING = KEYS[6]   -- zset: score run at, member smember()
local K_ACTIVE = KEYS[7]     -- zset: score lease expiry, member smember()
local K_COMPLETED = KEYS[8]  -- zset: score finished at, member smember()
local K_FAILED = KEYS[9]
local K_CANCELLED = KEYS[10]
local K_WAKE = KEYS[11]      -- list: a marker idle workers block on

-- Every field, in the order scripts return them (the Python decoder reads them by position).
local JOB_FIELDS = {'n', 'd', 's', 'p', 'a', 'm', 'r', 'e', 'q', 'b', 'f', 't', 'x', 'w', 'k',
    'c', 'res', 'err'}
local FI = {}
for i, name in ipairs(JOB_FIELDS) do
    FI[name] = i
end

-- Members of the sorted sets start with the sequence number as 16 digits, so members of equal
-- score sort by enqueue order, as the reference model orders them.
local function smember(seq, id)
    return string.format('%016d', seq) .. id
end

local function sid(member)
    return string.sub(member, 17)
end

-- Members of the queued set also carry the run time in microseconds: equal priorities run
-- oldest run time first, then in enqueue order.
local function qmember(run_at, seq, id)
    return string.format('%016d%016d', math.floor(run_at * 1000000), seq) .. id
end

local function qid(member)
    return string.sub(member, 33)
end

local STATE_SET = {
    scheduled = K_SCHEDULED, retrying = K_RETRYING, active = K_ACTIVE,
    completed = K_COMPLETED, failed = K_FAILED, cancelled = K_CANCELLED,
}

-- Reserve ``n`` sequence numbers; return the first. Sequence numbers follow the server's clock in
-- microseconds (so they order jobs across queues, which live on different cluster nodes) and
-- never repeat or go back within a queue.
local function next_seq(n)
    local last = tonum(redis.call('HGET', K_META, 'seq'), 0)
    local first = math.max(last + 1, micros())
    redis.call('HSET', K_META, 'seq', int(first + n - 1))
    return first
end

local function is_paused()
    return redis.call('HGET', K_META, 'paused') == '1'
end

-- Leave one marker for idle workers (one is enough: a worker that leaves jobs behind after its
-- fetch puts the marker back for the next one).
local function wake()
    if redis.call('LLEN', K_WAKE) == 0 then
        redis.call('RPUSH', K_WAKE, '1')
    end
end

-- Give the job at ``key`` a new run time. A job stores its enqueue time only when it differs
-- from its run time, so the first move writes the enqueue time down.
local function move_run_at(key, run_at)
    local v = redis.call('HMGET', key, 'r', 'e')
    if v[1] and not v[2] then
        redis.call('HSET', key, 'e', v[1], 'r', run_at)
    else
        redis.call('HSET', key, 'r', run_at)
    end
end
