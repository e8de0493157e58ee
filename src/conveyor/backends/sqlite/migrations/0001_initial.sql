-- Conveyor schema for SQLite, version 1.
-- Times are REAL epoch seconds; payloads and results are the engine's JSON bytes as BLOB.

CREATE TABLE conveyor_job (
    id               TEXT    NOT NULL PRIMARY KEY,
    queue            TEXT    NOT NULL,
    name             TEXT    NOT NULL,
    payload          BLOB    NOT NULL,
    state            TEXT    NOT NULL CHECK (state IN (
                         'scheduled', 'queued', 'active', 'retrying',
                         'completed', 'failed', 'cancelled')),
    priority         INTEGER NOT NULL DEFAULT 0,
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    run_at           REAL    NOT NULL,
    enqueued_at      REAL    NOT NULL,
    seq              INTEGER NOT NULL,
    started_at       REAL,
    finished_at      REAL,
    lease_token      TEXT,
    lease_expires_at REAL,
    worker_id        TEXT,
    stalls           INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),
    result           BLOB,
    error            TEXT
);

-- job_fetch: the queued jobs of a queue in the order they run. Partial, so a fetch reads it in
-- order and stops after LIMIT rows, however many jobs wait or are scheduled for later.
CREATE INDEX conveyor_job_ready_idx ON conveyor_job (queue, priority, run_at, seq)
    WHERE state = 'queued';
-- job_fetch and job_promote_due: scheduled and retrying jobs by run time, so finding the due
-- ones costs what is due, not what is scheduled.
CREATE INDEX conveyor_job_due_idx ON conveyor_job (state, run_at)
    WHERE state IN ('scheduled', 'retrying');
-- job_rescue_expired: active jobs by lease deadline.
CREATE INDEX conveyor_job_lease_idx ON conveyor_job (state, lease_expires_at);
-- retention, prune and listing of finished jobs per queue.
CREATE INDEX conveyor_job_finished_idx ON conveyor_job (queue, state, finished_at);
-- job_list keyset pagination (newest first).
CREATE UNIQUE INDEX conveyor_job_seq_idx ON conveyor_job (seq);

-- One counter row per sequence. A counter instead of max(seq) + 1 keeps seq increasing even
-- after the newest jobs are purged, so keyset cursors never see a number reused.
CREATE TABLE conveyor_sequence (
    name  TEXT    NOT NULL PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO conveyor_sequence (name, value) VALUES ('job_seq', 0);

-- Every queue ever used or paused; the row outlives its jobs, as queue_list expects.
CREATE TABLE conveyor_queue (
    name   TEXT    NOT NULL PRIMARY KEY,
    paused INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1))
);

CREATE TABLE conveyor_worker (
    id           TEXT    NOT NULL PRIMARY KEY,
    hostname     TEXT    NOT NULL,
    pid          INTEGER NOT NULL,
    queues       TEXT    NOT NULL,  -- JSON array of queue names
    concurrency  INTEGER NOT NULL,
    started_at   REAL    NOT NULL,
    last_seen_at REAL    NOT NULL,
    running      INTEGER NOT NULL DEFAULT 0,
    processed    INTEGER NOT NULL DEFAULT 0,
    expires_at   REAL    NOT NULL
);

CREATE TABLE conveyor_leader (
    name       TEXT NOT NULL PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at REAL NOT NULL
);
