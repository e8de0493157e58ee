-- job_list: the newest jobs of some states of one queue below a sequence number, read from the
-- states' listing indexes (keyset pagination: a page costs its size and a logarithm).
--
-- KEYS[1] jobs: prefix of the queue's job hashes (job key = prefix .. id)
-- KEYS[2] active: zset of leased jobs (few: read whole, as active jobs have no index)
-- KEYS[3] queued_by_seq: listing index of the queued set's jobs (score seq, member id)
-- KEYS[4] scheduled_by_seq: listing index of scheduled jobs
-- KEYS[5] retrying_by_seq: listing index of retrying jobs
-- KEYS[6] completed_by_seq: listing index of completed jobs
-- KEYS[7] failed_by_seq: listing index of failed jobs
-- KEYS[8] cancelled_by_seq: listing index of cancelled jobs
-- KEYS[9] ready: list of in-order priority-0 queued jobs, in increasing seq (see place.lua)
-- KEYS[10] dead: hash of id -> stale ready-list entries of that job
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
-- blocks the server for long however large the queue is. Queued jobs also cost a bisection of
-- the ready list (a logarithm of reads by position) and may pass over ``scan`` stale entries,
-- returning ``next`` when they ran out first.

local K_JOBS = KEYS[1]
local K_ACTIVE = KEYS[2]
local K_QUEUED_BY_SEQ = KEYS[3]
local K_SCHEDULED_BY_SEQ = KEYS[4]
local K_RETRYING_BY_SEQ = KEYS[5]
local K_COMPLETED_BY_SEQ = KEYS[6]
local K_FAILED_BY_SEQ = KEYS[7]
local K_CANCELLED_BY_SEQ = KEYS[8]
local K_READY = KEYS[9]
local K_DEAD = KEYS[10]

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

-- Queued jobs live in the ready list (in increasing seq, without index entries) and the queued
-- set (indexed in K_QUEUED_BY_SEQ); a page of them merges the newest of both. A ready-list
-- entry that ``dead`` counts is stale (its job was cancelled there; it may have been retried,
-- with a new seq, or pruned since): it is passed over, and its job's seq says nothing of
-- where the entry lies. Every other entry's job is queued there, at the job's seq.

local PROBE_WALK = 1000  -- stale entries a bisection step passes over to find a live one

local any_dead = redis.call('EXISTS', K_DEAD) == 1

-- The seqs of the ready-list entries ``ids`` (false for a stale one, or a job not queued), their
-- names, and which are live entries whose job key holds something else (a foreign producer's).
local function ready_seqs(ids)
    local stale = {}
    if any_dead then
        stale = redis.call('HMGET', K_DEAD, unpack(ids))
    end
    local seqs, names, foreign = {}, {}, {}
    for i, id in ipairs(ids) do
        seqs[i] = false
        if not stale[i] then
            local v = redis.pcall('HMGET', K_JOBS .. id, 's', 'q', 'n')
            if v.err then
                foreign[i] = true
            elseif v[1] == 'queued' then
                seqs[i] = tonumber(v[2]) or false
                names[i] = v[3]
            end
        end
    end
    return seqs, names, foreign
end

-- The position of the last ready-list entry below ``before`` (-1 if none): a bisection on
-- position, whose probes that meet a stale entry look on to the right for a live one.
local function ready_end(before)
    local hi = redis.call('LLEN', K_READY) - 1
    if before == nil then
        return hi
    end
    local lo = 0
    while lo <= hi do
        local mid = math.floor((lo + hi) / 2)
        local probe, seq = mid, false
        while probe <= hi and probe - mid < PROBE_WALK do
            local ids = redis.call('LRANGE', K_READY, probe,
                math.min(hi, probe + (probe == mid and 0 or 99)))
            if #ids == 0 then
                probe = hi + 1
                break
            end
            local seqs = ready_seqs(ids)
            local found = nil
            for i = 1, #ids do
                if seqs[i] then
                    found = i
                    break
                end
            end
            if found then
                probe, seq = probe + found - 1, seqs[found]
                break
            end
            probe = probe + #ids
        end
        -- Entries from mid to probe are stale: on whichever side, they are passed over.
        if seq then
            if seq < before then
                lo = probe + 1
            else
                hi = mid - 1
            end
        elseif probe > hi then
            hi = mid - 1  -- nothing live from mid on
        else
            -- A long stale run (a bulk cancel's): go on right of what was read. Erring right
            -- costs the page a read of what lies between; the page passes over entries at or
            -- above ``before``.
            lo = probe
        end
    end
    return hi
end

-- The live ready-list entries below ``before``, newest first, at most ``limit``, reading at
-- most ``budget`` entries; and the seq down to which they are complete (nil: to the head). A
-- cut is made only after a live entry, so that the next call starts below a known seq; a run of
-- more than STALE_RUN stale entries without one ends the list (a bulk cancel's remains, which
-- fetches pass over 5,000 at a time: a later listing sees past them).
local STALE_RUN = 10000

local function ready_below(before, budget)
    local at = ready_end(before)
    local found, last = {}, nil  -- last: the seq of the last live entry read
    local read, run, cut = 0, 0, false
    local size = limit
    while at >= 0 and not cut and #found < limit do
        local from = math.max(0, at - size + 1)
        local ids = redis.call('LRANGE', K_READY, from, at)
        local seqs, names, foreign = ready_seqs(ids)
        for i = #ids, 1, -1 do
            if #found == limit or (read >= budget and last) or run >= STALE_RUN then
                cut = true
                break
            end
            read = read + 1
            if seqs[i] and before ~= nil and seqs[i] >= before then
                run = run + 1  -- right of a stale run the bisection could not see past
            elseif seqs[i] then
                last, run = seqs[i], 0
                if name == '' or names[i] == name then
                    found[#found + 1] = {seqs[i], ids[i]}
                end
            else
                run = run + 1
                -- A foreign key's seq is unknown: it is listed beside the newer entry read
                -- before it (or first, on a first page), so that the caller names it.
                local seq = last or (before == nil and 9007199254740991)
                if foreign[i] and seq and name == '' then
                    found[#found + 1] = {seq, ids[i]}
                end
            end
        end
        at = from - 1
        size = math.min(500, size * 2)
    end
    if #found == limit then
        return found, found[limit][1]
    elseif cut and run < STALE_RUN then
        return found, last
    end
    return found, nil
end

-- The queued jobs below ``before``, newest first, as ``indexed_below`` returns them.
local function queued_below(before)
    local budget = scan
    if name == '' then
        budget = limit + scan
    end
    local ready, ready_bound = ready_below(before, budget)
    local indexed = indexed_below(K_QUEUED_BY_SEQ, before)
    local set_bound = nil
    if #indexed - 1 == limit then
        set_bound = indexed[#indexed][1]
    elseif indexed[1] ~= '' then
        set_bound = tonumber(indexed[1])
    end
    local bound = ready_bound
    if set_bound and (bound == nil or tonumber(set_bound) > bound) then
        bound = tonumber(set_bound)
    end
    local out = {''}
    local seen = {}  -- a job indexed in both (as left by an older layout) is listed once
    local r, z = 1, 2
    while #out <= limit do
        local a, b = ready[r], indexed[z]
        local pick
        if a and (not b or a[1] > tonumber(b[1])) then
            pick, r = {int(a[1]), a[2]}, r + 1
        elseif b then
            pick, z = b, z + 1
        else
            break
        end
        if bound and tonumber(pick[1]) < bound then
            break
        end
        if not seen[pick[2]] then
            seen[pick[2]] = true
            out[#out + 1] = pick
        end
    end
    if #out <= limit and bound then
        out[1] = int(bound)
    end
    return out
end

local result = {}
for i = 4, #ARGV, 2 do
    local before = tonumber(ARGV[i + 1])
    if ARGV[i] == 'active' then
        result[#result + 1] = active_below(before)
    elseif ARGV[i] == 'queued' then
        result[#result + 1] = queued_below(before)
    else
        result[#result + 1] = indexed_below(INDEXES[ARGV[i]], before)
    end
end
return result
