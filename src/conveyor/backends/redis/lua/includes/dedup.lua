-- Dedup records (see job_insert_dedup.lua): K_DEDUP is a hash of key -> the record of the job
-- holding it, '<mode>|<throttle expiry or empty>|<job id>' (mode s: until started, f: until
-- finished, t: throttle, d: debounce); K_DEDUP_JOBS a hash of job id -> the key it took, so
-- that deleting a job deletes its record: records never outnumber jobs. Needs K_DEDUP,
-- K_DEDUP_JOBS.

-- The mode, expiry (a number or nil) and holder id of a record.
local function dedup_record(record)
    local mode, expiry, id = string.match(record, '^(%a)|([^|]*)|(.*)$')
    return mode, tonumber(expiry), id
end

-- Jobs ids[i..j] were deleted: drop the records they still hold and their entries.
local function forget_dedup(ids, i, j)
    local keys = redis.call('HMGET', K_DEDUP_JOBS, unpack(ids, i, j))
    local any = false
    for n = 1, #keys do
        local key = keys[n]
        if key then
            any = true
            local record = redis.call('HGET', K_DEDUP, key)
            if record then
                local _, _, holder = dedup_record(record)
                if holder == ids[i + n - 1] then
                    redis.call('HDEL', K_DEDUP, key)
                end
            end
        end
    end
    if any then
        redis.call('HDEL', K_DEDUP_JOBS, unpack(ids, i, j))
    end
end
