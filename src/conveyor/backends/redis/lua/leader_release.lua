-- leader_release: give up a leadership, if ``holder`` holds it.
--
-- KEYS[1] leader: hash of the leadership: h holder, x expiry
-- ARGV[1] holder
-- Returns: 1 if it was released, else 0.
-- Guarantees: atomic; nobody else's leadership is released.

local K_LEADER = KEYS[1]

if redis.call('HGET', K_LEADER, 'h') == ARGV[1] then
    redis.call('DEL', K_LEADER)
    return 1
end
return 0
