-- A job's history of errors: a JSON array of [attempt, at, error] in the field ``h``, oldest
-- first, the last HISTORY_LIMIT kept, each error cut to HISTORY_ERROR_CHARS characters (as
-- conveyor.drivers.common, which reads it). Only a transition with an error touches it:
-- completions never read or write it, and its helpers are made only when an error is noted.
--
-- Entries are written by hand rather than with cjson.encode, which would print the time with
-- 14 significant digits and so change it; strings go through cjson.encode (JSON escapes).

local HISTORY_LIMIT = 20
local HISTORY_ERROR_CHARS = 2000

-- Append 'err' and 'h' for ``error`` of attempt ``attempt`` of the job at ``key`` to the HSET
-- list ``fields`` (nothing when ``error`` is nil: the last error stays).
local function note_error(fields, key, attempt, at, error)
    if error == nil then
        return
    end

    -- ``text`` cut to ``chars`` characters (UTF-8 sequences, as Python counts them).
    local function cut(text, chars)
        if #text <= chars then
            return text
        end
        local count = 0
        for i = 1, math.min(#text, chars * 4 + 1) do
            local byte = string.byte(text, i)
            if byte < 128 or byte >= 192 then  -- the first byte of a character
                count = count + 1
                if count > chars then
                    return string.sub(text, 1, i - 1)
                end
            end
        end
        return text
    end

    local function entry(n, when_, text)
        return '[' .. string.format('%d', n) .. ',' .. string.format('%.17g', when_) .. ','
            .. cjson.encode(text) .. ']'
    end

    local entries = {}
    local h = redis.call('HGET', key, 'h')
    if h then  -- an unreadable history (a foreign producer's) starts again
        local ok, decoded = pcall(cjson.decode, h)
        if ok and type(decoded) == 'table' then
            for _, e in ipairs(decoded) do
                if type(e) == 'table' and tonumber(e[1]) and tonumber(e[2])
                    and type(e[3]) == 'string' then
                    entries[#entries + 1] = entry(tonumber(e[1]), tonumber(e[2]), e[3])
                end
            end
        end
    end
    entries[#entries + 1] = entry(tonumber(attempt) or 0, at, cut(error, HISTORY_ERROR_CHARS))
    local first = math.max(#entries - HISTORY_LIMIT + 1, 1)
    fields[#fields + 1] = 'err'
    fields[#fields + 1] = error
    fields[#fields + 1] = 'h'
    fields[#fields + 1] = '[' .. table.concat(entries, ',', first) .. ']'
end
