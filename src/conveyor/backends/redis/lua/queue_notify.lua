-- queue_notify: wake one idle worker of the queue.
--
-- KEYS[1] wake: list idle workers block on
-- Returns: 1.
-- Guarantees: at most one marker waits in the queue's wake list.

local K_WAKE = KEYS[1]

--!include wake.lua

wake()
return 1
