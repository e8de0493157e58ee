-- queue_resume: let workers fetch from a paused queue again.
--
-- KEYS[1] meta: the queue's meta hash (field paused)
-- KEYS[2] wake: list idle workers block on
-- Returns: 1 if the queue was paused, else 0.
-- Guarantees: atomic; resuming wakes one idle worker.

local K_META = KEYS[1]
local K_WAKE = KEYS[2]

--!include wake.lua

if redis.call('HDEL', K_META, 'paused') == 1 then
    wake()
    return 1
end
return 0
