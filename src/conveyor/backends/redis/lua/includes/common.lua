-- Shared helpers of every Conveyor script: time, number formatting, optional arguments.
--
-- Numbers handed to redis.call must be formatted here: Lua would format them with %.14g, which
-- turns a 16-digit sequence number into 1.7960175381090e+15 and rounds lease deadlines.

-- ``arg`` is epoch seconds, or '' for the server's clock (what production uses: one clock for
-- every worker, so skew between hosts cannot expire a lease early).
local function clock(arg)
    if arg ~= '' then
        return tonumber(arg)
    end
    local t = redis.call('TIME')
    return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

-- The server's clock in whole microseconds (sequence numbers are built from it).
local function micros()
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- A float as text that reads back as the same double.
local function num(x)
    return string.format('%.17g', x)
end

-- An integer as plain digits.
local function int(x)
    return string.format('%d', x)
end

-- Optional arguments travel as '' (absent) or '=' followed by the value.
local function opt(arg)
    if arg == '' then
        return nil
    end
    return string.sub(arg, 2)
end

-- A stored number, or ``default`` when the field is missing or not a number (a job written by a
-- foreign producer must not break a script that every job of the queue goes through).
local function tonum(value, default)
    local n = tonumber(value)
    if n == nil then
        return default
    end
    return n
end
