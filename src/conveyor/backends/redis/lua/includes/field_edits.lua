-- Changes to a job's stored fields that several scripts make. Needs nothing but Lua.

-- The fields that give a job a new run time: its enqueue time is stored only while it equals
-- its run time, so the first move writes it down. ``run_at``/``enqueued_at`` are the stored
-- texts (or false), ``new_run_at`` the new time's text; appended to the HSET list ``fields``.
local function move_run_at(fields, run_at, enqueued_at, new_run_at)
    fields[#fields + 1] = 'r'
    fields[#fields + 1] = new_run_at
    if run_at and not enqueued_at then
        fields[#fields + 1] = 'e'
        fields[#fields + 1] = run_at
    end
end

-- The attempt field given back: an HSET pair appended to ``fields`` or, at 0, a field to HDEL
-- appended to ``gone``.
local function give_back_attempt(fields, gone, attempt)
    attempt = math.max((tonumber(attempt) or 0) - 1, 0)
    if attempt == 0 then
        gone[#gone + 1] = 'a'
    else
        fields[#fields + 1] = 'a'
        fields[#fields + 1] = string.format('%d', attempt)
    end
end
