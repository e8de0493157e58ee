-- job_extend_leases: renew the leases a worker holds on jobs of one queue.
--
-- KEYS[1] jobs: prefix of the queue's job hashes (job key = prefix .. id)
-- KEYS[2] active: zset of leased jobs, score the lease expiry
-- ARGV[1] now: epoch seconds, or '' for the server clock
-- ARGV[2] lease_seconds
-- ARGV[3..] id, token, isolated ('1' to mark the job as running alone, else '') triples
-- Returns: per triple, in order: 0 extended, 1 extended and a cancel was requested, 2 lost (the
-- job is gone, no longer active, or leased with another token); or an error reply, having
-- written nothing, when an argument is invalid.
-- Guarantees: atomic; only a lease held with its current token is extended; the isolated mark,
-- once set, stays until the job's next fetch or finish.

local K_JOBS = KEYS[1]
local K_ACTIVE = KEYS[2]

--!include common.lua
--!include args.lua
--!include members.lua
--!include sets.lua

local given_now = now_arg(1)
local lease = number_arg(2, 0, MAX_SECONDS, false,
    'lease_seconds must be seconds from 0 to 3153600000')
if (#ARGV - 2) % 3 ~= 0 then
    refuse(#ARGV, 'expected 2 arguments then 3 per lease')
end
for i = 3, #ARGV - 2, 3 do
    checked_item = i
    if ARGV[i + 2] ~= '' and ARGV[i + 2] ~= '1' then
        refuse(i + 2, "isolated must be '' or '1'")
    end
end
checked_item = nil
local bad = refused('job_extend_leases')
if bad then
    return bad
end

local now = clock(given_now)
sets_direct = #ARGV < 2 + 3 * GATHER_FROM
local expires = num(now + lease)
local out = {}
for i = 3, #ARGV, 3 do
    local id = ARGV[i]
    local key = K_JOBS .. id
    local v = redis.call('HMGET', key, 's', 't', 'q', 'c')
    if v[1] ~= 'active' or v[2] ~= ARGV[i + 1] then
        out[#out + 1] = 2
    else
        if ARGV[i + 2] == '1' then
            redis.call('HSET', key, 'x', expires, 'i', '1')
        else
            redis.call('HSET', key, 'x', expires)
        end
        zadd_later(K_ACTIVE, expires, smember(tonum(v[3], 0), id))
        if v[4] then
            out[#out + 1] = 1
        else
            out[#out + 1] = 0
        end
    end
end
flush_sets()
return out
