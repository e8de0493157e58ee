-- The jobs an insert batch names that exist already, read before anything is written. Needs
-- FIRST_OTHER: KEYS from it on are the job key prefixes of the other queues an id must not
-- exist in (standalone Redis only), beside KEYS[1], this queue's.

-- For each of the ``n`` jobs of ``per_job`` arguments from ARGV[3] (its id first), the state
-- of the job that has its id (here, then in the other queues), or false; or an error reply
-- naming ``script`` when a job key holds something other than a job hash.
local function existing_states(script, n, per_job)
    local found = {}
    for i = 0, n - 1 do
        local id = ARGV[3 + i * per_job]
        found[i] = false
        for k = 1, #KEYS do
            if k == 1 or k >= FIRST_OTHER then
                local state = redis.pcall('HGET', KEYS[k] .. id, 's')
                if type(state) == 'table' and state.err then
                    return redis.error_reply('ERR conveyor ' .. script .. ': job key ' .. KEYS[k]
                        .. id .. ' is not a job hash: ' .. state.err)
                end
                if state then
                    found[i] = state
                    break
                end
            end
        end
    end
    return found
end
