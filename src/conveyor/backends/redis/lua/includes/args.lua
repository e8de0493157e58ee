-- Checking ARGV before the first write. A script refuses bad input whole, with an error reply
-- naming the script and what was wrong (``ERR conveyor <script>: <problem>``), so that one bad
-- item of a batch can never leave the batch half applied. A script checks every argument with
-- plain expressions or the two helpers below (a script runs for every job, and each Lua call
-- and closure costs), ``refuse`` notes the first one that fails (only then is a message
-- built), and the script returns ``refused(<script name>)`` if any did, before it writes.

local MAX_EPOCH = 7258118400  -- 2200-01-01T00:00:00Z, as conveyor._validation.MAX_EPOCH
local MAX_SECONDS = 3153600000  -- 100 years, as conveyor._validation.MAX_SECONDS
local MAX_BATCH = 100000  -- items or a limit in one call: far above what the driver sends

local problem = nil  -- what was wrong with the first argument refused
local checked_item = nil  -- the ARGV index of the id of the item being checked, or nil

-- Note that ARGV[i] is refused because of ``what``, naming the job of the item being checked.
local function refuse(i, what)
    if problem == nil then
        local text = tostring(ARGV[i])
        if #text > 40 then
            text = string.sub(text, 1, 40) .. '...'
        end
        problem = what .. ", got '" .. text .. "'"
        if checked_item ~= nil then
            problem = "job '" .. string.sub(ARGV[checked_item], 1, 40) .. "': " .. problem
        end
    end
end

-- ARGV[i] as a number from ``low`` to ``high`` (a whole number when ``whole``); else nil,
-- with ARGV[i] refused because ``what``. Scripts use the number returned: every argument is
-- parsed once (tonumber is a strtod, not cheap for a float's 17 digits).
local function number_arg(i, low, high, whole, what)
    local x = tonumber(ARGV[i])
    if not (x and x >= low and x <= high) or (whole and x % 1 ~= 0) then  -- NaN fails too
        refuse(i, what)
        return nil
    end
    return x
end

-- ARGV[i] as ``now``: nil for '' (the server's clock), else epoch seconds from 1970 to 2200.
local function now_arg(i)
    if ARGV[i] == '' then
        return nil
    end
    return number_arg(i, 0, MAX_EPOCH, false, 'now must be epoch seconds from 0 to 7258118400')
end

-- The error reply to return when an argument was refused, else nil.
local function refused(script)
    if problem then
        return redis.error_reply('ERR conveyor ' .. script .. ': ' .. problem)
    end
    return nil
end
