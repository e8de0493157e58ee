-- The worker's usual fetch, answered before the script defines its helpers: a lease (mode
-- 'lease', a limit of 1 to 500, no rate limit, every argument valid) with no receipt stored for
-- it yet (or the one a release left), of a queue that is paused, or that has nothing due to
-- promote, no group whose turn has come, an empty queued set and no stale ready-list entry: it
-- leases from the head of the ready list (or finds it empty) as the general code's take()
-- would. Include it in job_fetch after the K_ names, fields.lua and active.lua, before every
-- other include: any other call passes through to the general code below, having only read.
--
-- Why: Lua makes every ``local function`` of the script anew on each call (a closure, its
-- upvalues found by walking the open ones), and the includes define some forty; an idle fetch
-- paid more for making them than for its commands (bench/PROFILE-fetch.md). This path also
-- sends fewer commands: the two reads of the scheduled and retrying sets serve both the check
-- that nothing is due and ``next_due``, and one EXISTS checks the queued set and the dead hash.
-- It writes exactly what the general code writes, in the same field order, and replies the
-- same; every check the general code makes of such a call is made here before the first write.
do
    local given = ARGV[1]
    local limit, lease = tonumber(ARGV[2]), tonumber(ARGV[3])
    local budget, ttl = tonumber(ARGV[7]), tonumber(ARGV[8])
    -- The general code's bounds (args.lua: MAX_EPOCH, MAX_SECONDS, MAX_BATCH), with tonumber's
    -- parse, so that what passes here passes there with the same values. NaN fails every test.
    if #ARGV == 11 and ARGV[6] == 'lease' and ARGV[5] ~= '' and ARGV[10] == ''
        and ARGV[11] == '' and (ARGV[9] == '' or ARGV[9] == '1')
        and limit and limit >= 1 and limit <= 500 and limit % 1 == 0
        and lease and lease >= 0 and lease <= 3153600000
        and budget and budget >= 0 and budget <= 100000 and budget % 1 == 0
        and ttl and ttl >= 1 and ttl <= 3153600000000 and ttl % 1 == 0 then
        if given == '' then
            given = nil
        else
            given = tonumber(given)
            if not (given and given >= 0 and given <= 7258118400) then
                given = false  -- refused by the general code, which names the argument
            end
        end
    else
        given = false
    end
    local forget = ARGV[9] == '1'
    local receipt = false
    if given ~= false and not (forget and K_PREVIOUS_RECEIPT == K_RECEIPT) then
        -- (The general code deletes the previous receipt before it reads this one: when both
        -- are one key, it reads none.) Reads go through pcall: a key of the wrong type is the
        -- general code's to raise, after the writes it makes first.
        receipt = redis.pcall('GET', K_RECEIPT)
    end
    if given ~= false and (not receipt or receipt == 'released') then
        local now = given
        if not now then  -- as clock (common.lua)
            local t = redis.call('TIME')
            now = tonumber(t[1]) + tonumber(t[2]) / 1000000
        end
        local answer  -- 'nothing' (released or paused), 'lease', or nil to pass through
        local due = nil  -- as next_due (promote.lua)
        local paused = not receipt and redis.pcall('HGET', K_META, 'paused')
        if receipt or paused == '1' then
            answer = 'nothing'
        elseif type(paused) ~= 'table' then
            local s = redis.pcall('ZRANGE', K_SCHEDULED, 0, 0, 'WITHSCORES')
            local r = redis.pcall('ZRANGE', K_RETRYING, 0, 0, 'WITHSCORES')
            local ring = redis.pcall('ZRANGEBYSCORE', K_RING, '-inf',
                string.format('%d', math.floor(now * 1000000 + 0.5)), 'LIMIT', 0, 1)
            if s[2] then
                due = tonumber(s[2])
            end
            if r[2] and (due == nil or tonumber(r[2]) < due) then
                due = tonumber(r[2])
            end
            -- Anything due is promoted by the general code; a group whose turn has come, the
            -- queued set's order and stale entries are its to merge. (An empty set or hash is
            -- no key: one EXISTS tells that both are empty.)
            if not (s.err or r.err or ring.err or (due and due <= now)) and #ring == 0
                and redis.call('EXISTS', K_QUEUED, K_DEAD) == 0
            then
                answer = 'lease'
            end
        end
        if answer then
            if forget then
                redis.call('DEL', K_PREVIOUS_RECEIPT)
            end
            local now_text = string.format('%.17g', now)
            if answer == 'nothing' then
                return {now_text, '', {}, {}}
            end
            local due_text = due and string.format('%.17g', due) or ''
            -- As take (take.lua) with no queued set and no stale entry: one pop of the head.
            local taken = redis.call('LPOP', K_READY, limit)
            if not taken then
                return {now_text, due_text, {}, {}}
            end
            local left = redis.call('LLEN', K_READY)
            if left == 0 then
                redis.call('HDEL', K_META, 'tr', 'tq')
            end
            -- As the general code's lease of the taken jobs, without groups.
            local row_at = {}
            for i, name in ipairs(JOB_FIELDS) do
                row_at[name] = i + 1
            end
            local jobs, leased, dropped, active = {}, {}, {}, {'+inf', ACTIVE_SENTINEL}
            local expires = string.format('%.17g', now + lease)
            local worker, base = ARGV[4], ARGV[5]
            for _, id in ipairs(taken) do
                local key = K_JOBS .. id
                local h = redis.pcall('HGETALL', key)
                local row = {id, false, false, false, false, false, false, false, false, false,
                    false, false, false, false, false, false, false, false, false, false, false,
                    false, false, false, false, false, false, false, false}
                if not h.err then
                    for k = 1, #h, 2 do
                        local at = row_at[h[k]]
                        if at then
                            row[at] = h[k + 1]
                        end
                    end
                end
                local state = row[1 + F_STATE]
                if state ~= 'queued' then
                    if not state then
                        dropped[#dropped + 1] = {id, 'its key is gone or holds no job hash'}
                    else
                        dropped[#dropped + 1] = {id, 'the job is ' .. state .. ', not queued'}
                    end
                else
                    local token = base .. string.format('%x', #jobs)
                    local attempt = string.format('%d', (tonumber(row[1 + F_ATTEMPT]) or 0) + 1)
                    redis.call('HSET', key, 's', 'active', 'a', attempt, 'b', now_text,
                        't', token, 'x', expires, 'w', worker)
                    if row[1 + F_CANCEL] or row[1 + F_ISOLATED] then
                        redis.call('HDEL', key, 'c', 'i')
                    end
                    active[#active + 1] = expires
                    active[#active + 1] = string.format('%016d', tonumber(row[1 + F_SEQ]) or 0)
                        .. id
                    row[1 + F_STATE], row[1 + F_ATTEMPT], row[1 + F_STARTED] = 'active', attempt,
                        now_text
                    row[1 + F_TOKEN], row[1 + F_EXPIRES], row[1 + F_WORKER] = token, expires,
                        worker
                    row[1 + F_CANCEL], row[1 + F_ISOLATED] = false, false
                    jobs[#jobs + 1] = row
                    leased[#leased + 1] = id
                end
            end
            redis.call('ZREM', K_QUEUED_BY_SEQ, unpack(taken))
            if #leased > 0 then
                redis.call('ZADD', K_ACTIVE, unpack(active))
                redis.call('SET', K_RECEIPT, cjson.encode(leased), 'PX',
                    string.format('%d', ttl))
            end
            if left > 0 and redis.call('LLEN', K_WAKE) == 0 then  -- as wake (wake.lua)
                redis.call('RPUSH', K_WAKE, '1')
            end
            return {now_text, due_text, jobs, dropped}
        end
    end
end
