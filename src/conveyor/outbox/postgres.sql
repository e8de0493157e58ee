-- The outbox on PostgreSQL: one statement per section. {schema} is the configured schema and
-- {channel} the notification channel, both as quoted identifiers, put in when the outbox is
-- built (never a value: values travel as %(name)s parameters). Times are epoch seconds.

-- name: outbox__create_schema
CREATE SCHEMA IF NOT EXISTS {schema};

-- Whether the outbox is complete already (the table, its index, and the columns added since it
-- was first made): checked before any DDL, because CREATE INDEX (even IF NOT EXISTS) and ALTER
-- TABLE lock the table against inserts until the transactions writing to it end.
-- name: outbox__exists
SELECT to_regclass(%(table)s) IS NOT NULL AND to_regclass(%(index)s) IS NOT NULL
    AND EXISTS (
        SELECT 1 FROM pg_attribute
        WHERE attrelid = to_regclass(%(table)s) AND attname = 'headers' AND NOT attisdropped
    );

-- Serializes concurrent starters (relays, migrations) of one schema's outbox until commit.
-- name: outbox__lock
SELECT pg_advisory_xact_lock(hashtext('conveyor_outbox'), hashtext(%(schema)s));

-- One row per job written and not yet moved. seq orders the rows (identity values are never
-- reused, so a relay deleting by seq can only ever delete the rows it read). A row Redis
-- refuses gets failed_at and error, and the relay skips it from then on. headers is the job's
-- NewJob.headers (JSON object text, NULL for none); it comes last, where outbox__add_headers
-- puts it in a table made before it, so that old and new tables have the same columns.
-- name: outbox__create_table
CREATE TABLE IF NOT EXISTS {schema}.conveyor_outbox (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id           text NOT NULL,
    queue        text NOT NULL,
    name         text NOT NULL,
    payload      bytea NOT NULL,
    priority     integer NOT NULL,
    max_attempts integer NOT NULL,
    run_at       double precision,
    delay        double precision NOT NULL,
    created_at   double precision NOT NULL,
    failed_at    double precision,
    error        text,
    headers      text
);

-- The upgrade of a table made before jobs had headers: its rows read as jobs without headers.
-- A nullable column without a default changes the catalog only (no rewrite of the rows).
-- name: outbox__add_headers
ALTER TABLE {schema}.conveyor_outbox ADD COLUMN IF NOT EXISTS headers text;

-- name: outbox__create_pending_index
CREATE INDEX IF NOT EXISTS conveyor_outbox_pending_idx
ON {schema}.conveyor_outbox (seq) WHERE failed_at IS NULL;

-- The whole batch in one statement, in the caller's transaction: the rows arrive as arrays,
-- so the statement text never changes with the batch size. Nothing is written unless the
-- connection is to the outbox's database (:database NULL: not checked); the table name itself
-- checks the schema. The notification is sent only if the transaction commits, and once per
-- transaction however many statements sent it.
-- name: outbox_insert_many
WITH reached AS (
    SELECT %(database)s::text IS NULL OR current_database() = %(database)s::text AS ok
), written AS (
    INSERT INTO {schema}.conveyor_outbox (
        id, queue, name, payload, priority, max_attempts, run_at, delay, created_at, headers
    )
    SELECT u.id, u.queue, u.name, u.payload, u.priority, u.max_attempts, u.run_at, u.delay,
        coalesce(%(now)s::float8, extract(epoch FROM clock_timestamp())), u.headers
    FROM unnest(
        %(ids)s::text[], %(queues)s::text[], %(names)s::text[], %(payloads)s::bytea[],
        %(priorities)s::int4[], %(max_attempts)s::int4[], %(run_ats)s::float8[],
        %(delays)s::float8[], %(headers)s::text[]
    ) WITH ORDINALITY
        AS u(id, queue, name, payload, priority, max_attempts, run_at, delay, headers, n)
    WHERE (SELECT ok FROM reached)
    ORDER BY u.n
    RETURNING 1
)
SELECT (SELECT ok FROM reached), (SELECT count(*) FROM written),
    (SELECT pg_notify(%(channel)s, '') WHERE EXISTS (SELECT 1 FROM written));

-- name: relay__listen
LISTEN {channel};

-- The oldest rows still to move, locked until the relay's transaction ends; rows another relay
-- holds are skipped, so relays can run side by side. Also the database's clock, which the
-- relay needs for what is left of each job's delay and for the lag.
-- name: relay__take
SELECT seq, id, queue, name, payload, priority, max_attempts, run_at, delay, created_at,
    headers, extract(epoch FROM clock_timestamp())
FROM {schema}.conveyor_outbox
WHERE failed_at IS NULL
ORDER BY seq
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: relay__delete
DELETE FROM {schema}.conveyor_outbox WHERE seq = ANY(%(seqs)s::int8[]);

-- name: relay__set_aside
UPDATE {schema}.conveyor_outbox AS o
SET failed_at = extract(epoch FROM clock_timestamp()), error = f.error
FROM unnest(%(seqs)s::int8[], %(errors)s::text[]) AS f(seq, error)
WHERE o.seq = f.seq;

-- Rows waiting to move, rows set aside, and the age in seconds of the oldest waiting one.
-- name: relay__status
SELECT count(*) FILTER (WHERE failed_at IS NULL), count(*) FILTER (WHERE failed_at IS NOT NULL),
    extract(epoch FROM clock_timestamp()) - min(created_at) FILTER (WHERE failed_at IS NULL)
FROM {schema}.conveyor_outbox;
