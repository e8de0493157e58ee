-- job_progress_many: store the latest progress of leased jobs of one queue, each fenced by its
-- lease token.
--
-- KEYS[1] jobs: prefix of the queue's job hashes (job key = prefix .. id)
-- ARGV[1] now: epoch seconds, or '' for the server clock
-- ARGV[2] n: number of updates; then 4 arguments per update:
--         id, token, fraction (0 to 1), message ('' for none, else '=' followed by it)
-- Returns: per update, in order: 'ok', 'lease_lost' (not active, or another token) or
-- 'not_found'; or an error reply, having written nothing, when an argument is invalid.
-- Guarantees: atomic, and every argument is checked before the first write; only the progress
-- fields (pg, pm, pa) of a job active with the given token change.

local K_JOBS = KEYS[1]

--!include common.lua
--!include args.lua

local given_now = now_arg(1)
local n = tonumber(ARGV[2])
if not (n and n % 1 == 0 and n >= 0 and n <= MAX_BATCH and #ARGV == 2 + 4 * n) then
    refuse(2, 'the update count must say how many updates of 4 arguments follow')
    n = 0
end
for i = 0, n - 1 do
    local base = 3 + i * 4
    checked_item = base
    if ARGV[base + 1] == '' then
        refuse(base + 1, 'the token must not be empty')
    end
    number_arg(base + 2, 0, 1, false, 'progress must be a number from 0 to 1')
    local message = ARGV[base + 3]
    if message ~= '' and string.byte(message) ~= 61 then  -- '='
        refuse(base + 3, "the message must be '' or '=' and the message")
    end
end
checked_item = nil
local bad = refused('job_progress_many')
if bad then
    return bad
end

local now_text = num(clock(given_now))
local out = {}
for i = 0, n - 1 do
    local base = 3 + i * 4
    local key = K_JOBS .. ARGV[base]
    local v = redis.call('HMGET', key, 's', 't')
    if not v[1] then
        out[#out + 1] = 'not_found'
    elseif v[1] ~= 'active' or v[2] ~= ARGV[base + 1] then
        out[#out + 1] = 'lease_lost'
    else
        local message = ARGV[base + 3]
        if message == '' then
            redis.call('HDEL', key, 'pm')
            redis.call('HSET', key, 'pg', ARGV[base + 2], 'pa', now_text)
        else
            redis.call('HSET', key, 'pg', ARGV[base + 2], 'pm', string.sub(message, 2),
                'pa', now_text)
        end
        out[#out + 1] = 'ok'
    end
end
return out
