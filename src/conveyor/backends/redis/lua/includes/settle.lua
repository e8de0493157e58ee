-- How a script that placed jobs or deferred set writes ends: appends written, sets flushed,
-- and, if any job became runnable, one idle worker woken. Include place.lua, sets.lua and
-- wake.lua first.
local function settle(woken)
    save_tail()
    flush_sets()
    if woken then
        wake()
    end
end
