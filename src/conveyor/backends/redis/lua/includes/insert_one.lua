-- The usual insert, done before the script defines its helpers: one job of priority 0 with no
-- run time, delay, retention, group or headers, a max_attempts in digits, no other queues to
-- check, and ``now`` either '' or epoch seconds in range. Include it first in job_insert_many,
-- after the K_ names, and nothing else: any other call passes through to the general code below.
--
-- Why: Lua makes every ``local function`` of the script anew on each call (a closure, its
-- upvalues found by walking the open ones), and the includes define some forty. Profiled under
-- callgrind, making them was a third of the server's instructions of a single insert. This path
-- runs before any of them and sends one command fewer (the meta hash is written once): it
-- stores exactly what the general code stores, in the same field order, and replies the same.
-- Every check the general code makes for such a call is made here before the first write; a
-- call it cannot answer leaves it having read only.
do
    local given = ARGV[1]
    local m = ARGV[7]
    if #KEYS == FIRST_OTHER - 1 and ARGV[2] == '1' and #ARGV == 2 + PER_JOB
        and ARGV[6] == '0' and ARGV[8] == '' and (ARGV[9] == '0.0' or ARGV[9] == '0')
        and ARGV[10] == '' and ARGV[11] == '' and ARGV[12] == '' and ARGV[13] == ''
        and ARGV[14] == '' and (string.find(m, '^[1-9]%d?%d?$') or m == '1000') then
        if given ~= '' then
            given = tonumber(given)
            if not (given and given >= 0 and given <= 7258118400) then  -- NaN fails too
                given = false  -- refused by the general code, which names the argument
            end
        else
            given = nil
        end
    else
        given = false
    end
    if given ~= false then
        local id = ARGV[3]
        local job_key = K_JOBS .. id
        local found = redis.pcall('HGET', job_key, 's')
        if type(found) == 'table' and found.err then
            return redis.error_reply('ERR conveyor job_insert_many: job key ' .. job_key
                .. ' is not a job hash: ' .. found.err)
        end
        if found then
            return {'!' .. found}
        end
        -- As next_seq (seq.lua), clock (common.lua) and when (common.lua) compute them.
        local v = redis.call('HMGET', K_META, 'seq', 'tr', 'tq')
        local t = redis.call('TIME')
        -- TIME's digits as numbers: arithmetic parses a string once, tonumber twice.
        local s, us = t[1] + 0, t[2] + 0
        local now = given or s + us / 1000000
        local seq = math.max((tonumber(v[1]) or 0) + 1, s * 1000000 + us)
        local seq_text = string.format('%d', seq)
        local run_micros = math.floor(now * 1000000 + 0.5)
        local run_text
        if run_micros / 1000000 == now then
            run_text = string.format('%d', run_micros)
        else
            run_text = string.format('%.17g', now)
        end
        -- As place (place.lua): appended to the ready list when it sorts after the tail and
        -- the id has no stale entry there (HEXISTS of a missing hash is 0, as its EXISTS).
        local micros = math.floor(now * 1000000)
        local append = not v[2] or (micros >= (tonumber(v[2]) or 0) and seq > (tonumber(v[3]) or 0))
        append = append and redis.call('HEXISTS', K_DEAD, id) == 0
        redis.call('HSET', job_key, 'n', ARGV[4], 'd', ARGV[5], 's', 'queued', 'm', m,
            'r', run_text, 'q', seq_text)
        if append then
            redis.call('RPUSH', K_READY, id)
            redis.call('HSET', K_META, 'seq', seq_text, 'tr', string.format('%d', micros),
                'tq', seq_text)
        else
            redis.call('HSET', K_META, 'seq', seq_text)
            redis.call('ZADD', K_QUEUED, '0', string.format('%016d%016d', micros, seq) .. id)
            redis.call('ZADD', K_QUEUED_BY_SEQ, seq_text, id)
        end
        if redis.call('LLEN', K_WAKE) == 0 then
            redis.call('RPUSH', K_WAKE, '1')
        end
        return {'queued'}
    end
end
