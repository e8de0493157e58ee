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
