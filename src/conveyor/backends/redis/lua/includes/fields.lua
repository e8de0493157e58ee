-- Every job field, in the order scripts return them (the Python decoder reads them by
-- position), and the positions of the ones scripts change.
local JOB_FIELDS = {'n', 'd', 's', 'p', 'a', 'm', 'r', 'e', 'q', 'b', 'f', 't', 'x', 'w', 'k',
    'c', 'res', 'err'}
local F_STATE, F_ATTEMPT, F_SEQ, F_STARTED = 3, 5, 9, 10
local F_TOKEN, F_EXPIRES, F_WORKER, F_CANCEL = 12, 13, 14, 16
