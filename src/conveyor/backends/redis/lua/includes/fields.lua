-- Every job field, in the order scripts return them (the Python decoder reads them by
-- position), and the positions of the ones scripts change.
local JOB_FIELDS = {'n', 'd', 's', 'p', 'a', 'm', 'r', 'e', 'q', 'b', 'f', 't', 'x', 'w', 'k',
    'c', 'res', 'err'}
local F_STATE, F_PRIORITY, F_ATTEMPT, F_RUN_AT, F_SEQ, F_STARTED = 3, 4, 5, 7, 9, 10
local F_TOKEN, F_EXPIRES, F_WORKER, F_CANCEL = 12, 13, 14, 16
