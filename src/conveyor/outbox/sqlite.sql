-- The outbox on SQLite: one statement per section, named parameters. Times are REAL epoch
-- seconds, read from SQLite's clock unless the caller passes :now.

-- AUTOINCREMENT: a seq is never reused, so a relay deleting by seq can only ever delete the
-- rows it read (without it, a new row could take the number of a row just deleted by another
-- relay). A row Redis refuses gets failed_at and error, and the relay skips it from then on.
-- headers is the job's NewJob.headers (JSON object text, NULL for none); it comes last, where
-- outbox__add_headers puts it in a table made before it, so old and new tables have the same
-- columns.
-- name: outbox__create_table
CREATE TABLE IF NOT EXISTS conveyor_outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL,
    queue        TEXT NOT NULL,
    name         TEXT NOT NULL,
    payload      BLOB NOT NULL,
    priority     INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    run_at       REAL,
    delay        REAL NOT NULL,
    created_at   REAL NOT NULL,
    failed_at    REAL,
    error        TEXT,
    headers      TEXT
);

-- Whether the table has the columns added since it was first made (SQLite has no ADD COLUMN
-- IF NOT EXISTS: the upgrade checks first, in the same write transaction).
-- name: outbox__has_headers
SELECT EXISTS (SELECT 1 FROM pragma_table_info('conveyor_outbox') WHERE name = 'headers');

-- The upgrade of a table made before jobs had headers: its rows read as jobs without headers.
-- name: outbox__add_headers
ALTER TABLE conveyor_outbox ADD COLUMN headers TEXT;

-- name: outbox__create_pending_index
CREATE INDEX IF NOT EXISTS conveyor_outbox_pending_idx ON conveyor_outbox (seq)
WHERE failed_at IS NULL;

-- The file of the connection's main database, to check it is the outbox's, whether the outbox
-- table is there, and whether it has the headers column (a table made before it must be
-- upgraded first, or the jobs' headers would be lost).
-- name: outbox__database
SELECT (SELECT file FROM pragma_database_list WHERE name = 'main'),
    EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'conveyor_outbox'),
    EXISTS (SELECT 1 FROM pragma_table_info('conveyor_outbox') WHERE name = 'headers');

-- One job; a batch repeats the VALUES row with numbered parameters (:id_0, :id_1 ...), all
-- but :now, in one statement.
-- name: outbox_insert_many
INSERT INTO conveyor_outbox (
    id, queue, name, payload, priority, max_attempts, run_at, delay, created_at, headers
) VALUES (
    :id, :queue, :name, :payload, :priority, :max_attempts, :run_at, :delay,
    coalesce(:now, (julianday('now') - 2440587.5) * 86400.0), :headers
);

-- name: relay__take
SELECT seq, id, queue, name, payload, priority, max_attempts, run_at, delay, created_at,
    headers, (julianday('now') - 2440587.5) * 86400.0
FROM conveyor_outbox INDEXED BY conveyor_outbox_pending_idx
WHERE failed_at IS NULL
ORDER BY seq
LIMIT :limit;

-- name: relay__delete
DELETE FROM conveyor_outbox WHERE seq IN (SELECT value FROM json_each(:seqs));

-- name: relay__set_aside
UPDATE conveyor_outbox
SET failed_at = (julianday('now') - 2440587.5) * 86400.0, error = :error
WHERE seq = :seq;

-- name: relay__status
SELECT count(*) FILTER (WHERE failed_at IS NULL), count(*) FILTER (WHERE failed_at IS NOT NULL),
    (julianday('now') - 2440587.5) * 86400.0 - min(created_at) FILTER (WHERE failed_at IS NULL)
FROM conveyor_outbox;
