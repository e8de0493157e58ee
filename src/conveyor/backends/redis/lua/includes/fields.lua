-- Every job field, in the order scripts return them (the Python decoder reads them by
-- position), and the positions of the ones scripts read or change. Only constants, so that a
-- script may include this before the code that runs ahead of its helpers (fetch_early.lua);
-- the helpers that edit fields are in field_edits.lua.
--
-- A job hash stores short field names and omits fields at their default, so that a queued job
-- costs as little memory as possible: n name, d payload, s state, p priority (0), a attempt (0),
-- m max attempts, r run at, e enqueued at (= r), q sequence, b started at, f finished at,
-- t lease token, x lease expiry, w worker id, k stalls (0), c cancel requested (absent),
-- res result, err last error, h history of errors (JSON, absent when empty), i isolated
-- (absent), pg progress (a fraction), pm its message, pa when it was written, kc / kf the job's
-- own retention once completed / failed (seconds), ex when that retention expires, g its group's
-- key (absent for a plain job; see groups.lua), hd its headers (NewJob.headers, the JSON text as
-- sent; absent when it has none, so a job without headers costs nothing). The group's limits
-- (gl) are read apart, by the few paths that place a job again: every field here costs every
-- fetched job a lookup.
local JOB_FIELDS = {'n', 'd', 's', 'p', 'a', 'm', 'r', 'e', 'q', 'b', 'f', 't', 'x', 'w', 'k',
    'c', 'res', 'err', 'h', 'i', 'pg', 'pm', 'pa', 'kc', 'kf', 'ex', 'g', 'hd'}
local F_STATE, F_PRIORITY, F_ATTEMPT, F_RUN_AT, F_SEQ, F_STARTED = 3, 4, 5, 7, 9, 10
local F_TOKEN, F_EXPIRES, F_WORKER, F_CANCEL, F_ISOLATED = 12, 13, 14, 16, 20
local F_GROUP = 27
