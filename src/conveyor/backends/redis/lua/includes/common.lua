-- Time and number formatting, needed by nearly every script.
--
-- Numbers handed to redis.call must be formatted here: Lua would format them with %.14g, which
-- turns a 16-digit sequence number into 1.7960175381090e+15 and rounds lease deadlines. Every
-- helper is a closure made anew on each call of a script, so helpers are few and small.

local server_time = nil  -- the reply of TIME, read at most once per script (it costs as much
                          -- as several other commands)

-- ``given`` (epoch seconds, see ``now_arg``), or the server's clock when it is nil (what
-- production uses: one clock for every worker, so skew between hosts cannot expire a lease
-- early).
local function clock(given)
    if given then
        return given
    end
    server_time = server_time or redis.call('TIME')
    return tonumber(server_time[1]) + tonumber(server_time[2]) / 1000000
end

-- A float as text that reads back as the same double.
local function num(x)
    return string.format('%.17g', x)
end

-- A stored number, or ``default`` when the field is missing or not a number (a job written by a
-- foreign producer must not break a script that every job of the queue goes through).
local function tonum(value, default)
    return tonumber(value) or default
end

-- An integer as plain digits.
local function int(x)
    return string.format('%d', x)
end

-- A run or enqueue time as stored: whole microseconds when that is exact (what the server's
-- clock gives), which Redis keeps as an 8-byte integer instead of a 17-character string; the
-- full float otherwise (a caller's own clock). ``seconds`` reads either back.
local function when(x)
    local micros = math.floor(x * 1000000 + 0.5)
    if micros / 1000000 == x then
        return string.format('%d', micros)
    end
    return string.format('%.17g', x)
end

local function seconds(text)
    if text and not string.find(text, '[.eEn]') then
        return (tonumber(text) or 0) / 1000000
    end
    return tonumber(text)
end
