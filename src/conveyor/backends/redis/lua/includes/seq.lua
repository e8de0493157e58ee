-- Reserve ``n`` sequence numbers; return the first. Sequence numbers follow the server's clock in
-- microseconds (so they order jobs across queues, which live on different cluster nodes) and
-- never repeat or go back within a queue. Reads the ready list's tail for ``place`` on the way
-- (one command for both); include place.lua first. Needs K_META.
local function next_seq(n)
    local v = redis.call('HMGET', K_META, 'seq', 'tr', 'tq')
    if ready_tail == nil then
        load_tail(v[2], v[3])
    end
    server_time = server_time or redis.call('TIME')
    local micros = tonumber(server_time[1]) * 1000000 + tonumber(server_time[2])
    local first = math.max((tonumber(v[1]) or 0) + 1, micros)
    redis.call('HSET', K_META, 'seq', string.format('%d', first + n - 1))
    return first
end
