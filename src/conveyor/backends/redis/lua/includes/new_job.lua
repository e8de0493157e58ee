-- A new job: its hash written and the job placed, queued (see place.lua) or scheduled, as every
-- script that makes one (job_insert_many, job_insert_dedup, cron_fire) does. Needs K_JOBS,
-- K_SCHEDULED, K_SCHEDULED_BY_SEQ and what place.lua needs; include place.lua first.
--
-- ``run_text`` is when(run_at), which a batch may compute once for jobs sharing a run time;
-- ``keep_completed`` and ``keep_failed`` are the retention arguments as sent ('' = none), and
-- ``group`` and ``limits`` the group arguments (see group_args in groups.lua; '' = none),
-- ``headers`` the job's headers as sent ('' = none: no field is written). The
-- caller saves the ready list's tail (save_tail) and wakes a worker when a job was queued.
-- Returns the job's state, 'queued' or 'scheduled'.
local function new_job(id, name, payload, priority, max_attempts, run_at, run_text, seq, now,
        keep_completed, keep_failed, group, limits, headers)
    local state = 'queued'
    if run_at > now then
        state = 'scheduled'
    end
    local seq_text = int(seq)
    local fields = {'n', name, 'd', payload, 's', state, 'm', max_attempts, 'r', run_text,
        'q', seq_text}
    if priority ~= 0 then
        fields[#fields + 1] = 'p'
        fields[#fields + 1] = int(priority)
    end
    if run_at ~= now then
        fields[#fields + 1] = 'e'
        fields[#fields + 1] = when(now)
    end
    if keep_completed ~= '' then
        fields[#fields + 1] = 'kc'
        fields[#fields + 1] = keep_completed
    end
    if keep_failed ~= '' then
        fields[#fields + 1] = 'kf'
        fields[#fields + 1] = keep_failed
    end
    if headers ~= '' then
        fields[#fields + 1] = 'hd'
        fields[#fields + 1] = headers
    end
    if group ~= '' then
        fields[#fields + 1] = 'g'
        fields[#fields + 1] = group
        fields[#fields + 1] = 'gl'
        fields[#fields + 1] = limits
    else
        group = nil
    end
    redis.call('HSET', K_JOBS .. id, unpack(fields))
    if state == 'queued' then
        place(id, priority, run_at, seq, group, limits)
    else
        redis.call('ZADD', K_SCHEDULED, num(run_at), smember(seq, id))
        redis.call('ZADD', K_SCHEDULED_BY_SEQ, seq_text, id)
    end
    return state
end
