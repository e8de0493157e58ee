-- Leave one marker for idle workers (one is enough: a worker that leaves jobs behind after its
-- fetch puts the marker back for the next one). Needs K_WAKE.
local function wake()
    if redis.call('LLEN', K_WAKE) == 0 then
        redis.call('RPUSH', K_WAKE, '1')
    end
end
