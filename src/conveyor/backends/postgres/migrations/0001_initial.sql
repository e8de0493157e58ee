-- Conveyor schema for PostgreSQL, version 1. {schema} is the schema the URL names (quoted).
-- Times are double precision epoch seconds (the backend clock is extract(epoch from now()));
-- payloads and results are the engine's JSON bytes, kept byte for byte as bytea.

CREATE TABLE {schema}.conveyor_job (
    id               text             NOT NULL PRIMARY KEY,
    queue            text             NOT NULL,
    name             text             NOT NULL,
    payload          bytea            NOT NULL,
    state            text             NOT NULL CHECK (state IN (
                         'scheduled', 'queued', 'active', 'retrying',
                         'completed', 'failed', 'cancelled')),
    priority         integer          NOT NULL DEFAULT 0,
    attempt          integer          NOT NULL DEFAULT 0,
    max_attempts     integer          NOT NULL,
    run_at           double precision NOT NULL,
    enqueued_at      double precision NOT NULL,
    seq              bigint           NOT NULL,
    started_at       double precision,
    finished_at      double precision,
    lease_token      text,
    lease_expires_at double precision,
    worker_id        text,
    stalls           integer          NOT NULL DEFAULT 0,
    cancel_requested boolean          NOT NULL DEFAULT false,
    isolated         boolean          NOT NULL DEFAULT false,
    result           bytea,
    error            text,
    -- The errors of the job's attempts, oldest first: [[attempt, at, error], ...].
    errors           jsonb
-- Room on each page for the new version of a row whose indexed columns do not change (a lease
-- renewal), so that update stays on its page (HOT) and adds no index entries.
) WITH (fillfactor = 85);

-- job_fetch: the queued jobs of a queue in the order they run. Partial, so a fetch reads it in
-- order and stops after LIMIT rows, however many jobs wait, run or are scheduled for later.
CREATE INDEX conveyor_job_ready_idx ON {schema}.conveyor_job (queue, priority, run_at, seq)
    WHERE state = 'queued';
-- job_fetch and job_promote_due: scheduled and retrying jobs of a queue by run time, so finding
-- the due ones costs what is due, not what is scheduled.
CREATE INDEX conveyor_job_due_idx ON {schema}.conveyor_job (queue, run_at, seq)
    WHERE state IN ('scheduled', 'retrying');
-- job_expired: the active jobs (as many as all workers run at once). Keyed on a column a lease
-- renewal leaves alone, so renewals stay HOT; the deadline is filtered on the way.
CREATE INDEX conveyor_job_active_idx ON {schema}.conveyor_job (worker_id)
    WHERE state = 'active';
-- job_list: one keyset range per (queue, state), newest first.
CREATE INDEX conveyor_job_list_idx ON {schema}.conveyor_job (queue, state, seq);
-- job_prune_finished by age: the oldest failed or cancelled jobs (completed ones are read from
-- the next index, queue by queue: one index entry less to write for every job that completes).
CREATE INDEX conveyor_job_age_idx ON {schema}.conveyor_job (state, finished_at, seq)
    WHERE state IN ('failed', 'cancelled');
-- Retention by count and by age: the completed jobs of a queue by finish time.
CREATE INDEX conveyor_job_finished_idx ON {schema}.conveyor_job (queue, finished_at, seq)
    WHERE state = 'completed';

-- Keyset cursors and ties in run order; never reused, even after the newest jobs are purged.
CREATE SEQUENCE {schema}.conveyor_job_seq AS bigint;

-- Every queue ever used or paused; the row outlives its jobs, as queue_list expects.
CREATE TABLE {schema}.conveyor_queue (
    name   text    NOT NULL PRIMARY KEY,
    paused boolean NOT NULL DEFAULT false
);

CREATE TABLE {schema}.conveyor_worker (
    id           text             NOT NULL PRIMARY KEY,
    hostname     text             NOT NULL,
    pid          integer          NOT NULL,
    queues       jsonb            NOT NULL,
    names        jsonb            NOT NULL DEFAULT '[]',
    concurrency  integer          NOT NULL,
    started_at   double precision NOT NULL,
    last_seen_at double precision NOT NULL,
    running      integer          NOT NULL DEFAULT 0,
    processed    bigint           NOT NULL DEFAULT 0,
    expires_at   double precision NOT NULL,
    registered   bigint           NOT NULL GENERATED ALWAYS AS IDENTITY
);

CREATE TABLE {schema}.conveyor_leader (
    name       text             NOT NULL PRIMARY KEY,
    holder     text             NOT NULL,
    expires_at double precision NOT NULL
);

-- Which queue serves which job name, as workers declare it (for enqueue_by_name).
CREATE TABLE {schema}.conveyor_route (
    name       text             NOT NULL PRIMARY KEY,
    queue      text             NOT NULL,
    updated_at double precision NOT NULL
);

-- Facts about this store. 'instance' is a random id: a write through a caller's own connection
-- (enqueue inside the caller's transaction) checks it, so it cannot land in another database
-- or schema that merely looks the same.
CREATE TABLE {schema}.conveyor_meta (
    key   text NOT NULL PRIMARY KEY,
    value text NOT NULL
);
INSERT INTO {schema}.conveyor_meta (key, value) VALUES ('instance', gen_random_uuid()::text);

-- A job's history with one more attempt's error, keeping the last `keep` entries and at most
-- `chars` characters of the error. A history that is not a JSON array (written by hand or by a
-- foreign producer) starts afresh rather than failing the transition. Plain SQL, used only on
-- the paths where an attempt failed.
CREATE FUNCTION {schema}.conveyor_history_add(
    history jsonb, attempt integer, at double precision, error text, keep integer, chars integer
) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(jsonb_agg(h.e ORDER BY h.n), '[]'::jsonb)
    FROM (
        SELECT e, n FROM jsonb_array_elements(
            CASE WHEN jsonb_typeof(history) = 'array' THEN history ELSE '[]'::jsonb END
            || jsonb_build_array(jsonb_build_array(attempt, at, left(error, chars)))
        ) WITH ORDINALITY AS x(e, n)
        ORDER BY n DESC
        LIMIT keep
    ) h
$$;
