-- The keys of one queue, all sharing its hash tag, in the order every queue script receives
-- them, and the members of its sorted sets.
--
-- A job hash stores short field names and omits fields at their default, so that a queued job
-- costs as little memory as possible: n name, d payload, s state, p priority (0), a attempt (0),
-- m max attempts, r run at, e enqueued at (= r), q sequence, b started at, f finished at,
-- t lease token, x lease expiry, w worker id, k stalls (0), c cancel requested (absent),
-- res result, err error.

local K_JOBS = KEYS[1]       -- prefix of job hashes: the job key is this followed by the id
local K_META = KEYS[2]       -- hash: paused, seq (last sequence number issued)
local K_READY = KEYS[3]      -- list: queued priority-0 jobs in run order (the fast path)
local K_QUEUED = KEYS[4]     -- zset: every other queued job, score priority, member qmember
local K_SCHEDULED = KEYS[5]  -- zset: score run at, member smember
local K_RETRYING = KEYS[6]   -- zset: score run at, member smember
local K_ACTIVE = KEYS[7]     -- zset: score lease expiry, member smember
local K_COMPLETED = KEYS[8]  -- zset: score finished at, member smember
local K_FAILED = KEYS[9]
local K_CANCELLED = KEYS[10]
local K_WAKE = KEYS[11]      -- list: a marker idle workers block on

-- Members of the sorted sets ("smember") start with the sequence number as 16 digits, so members
-- of equal score sort in enqueue order, as the reference model orders them: the id starts at 17.
-- Members of the queued set ("qmember") also carry the run time in microseconds first (equal
-- priorities run oldest run time first, then in enqueue order): the id starts at 33.
local function smember(seq, id)
    return string.format('%016d', seq) .. id
end

-- The sorted set of a state (queued jobs are in the ready list or the queued set).
local function state_set(state)
    if state == 'scheduled' then return K_SCHEDULED
    elseif state == 'retrying' then return K_RETRYING
    elseif state == 'active' then return K_ACTIVE
    elseif state == 'completed' then return K_COMPLETED
    elseif state == 'failed' then return K_FAILED
    elseif state == 'cancelled' then return K_CANCELLED
    end
    return nil
end
