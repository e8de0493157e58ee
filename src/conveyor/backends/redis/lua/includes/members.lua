-- Members of the time-scored sets ("smember") start with the sequence number as 16 digits, so
-- members of equal score sort in enqueue order, as the reference model orders them: the id
-- starts at 17. Members of the queued set ("qmember") also carry the run time in microseconds
-- first (equal priorities run oldest run time first, then in enqueue order): the id starts at 33.
local function smember(seq, id)
    return string.format('%016d', seq) .. id
end

-- A run time in whole microseconds, clamped to what the fixed-width members hold (callers
-- validate far inside these bounds; a foreign producer's garbage, NaN included, must not
-- corrupt the layout).
local function micros_of(run_at)
    local micros = math.floor(run_at * 1000000)
    if not (micros >= 0) then  -- negative or NaN
        return 0
    end
    return math.min(micros, 9999999999999999)
end

local function qmember(run_at, seq, id)
    return string.format('%016d%016d', micros_of(run_at), seq) .. id
end
