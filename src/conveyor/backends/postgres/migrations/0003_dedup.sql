-- Conveyor schema for PostgreSQL: dedup keys (enqueue(..., dedup=...)).

-- The job holding each dedup key of a queue, the mode it took the key with and, for a throttle,
-- when the key is free again whatever the job does. Whether the key is still held is decided
-- at the next insert with it, from the holder job (see conveyor.drivers.common.dedup_held).
-- Deleting a job (prune, purge, retention) deletes its record: records never outnumber jobs.
CREATE TABLE {schema}.conveyor_dedup (
    queue      text             NOT NULL,
    key        text             NOT NULL,
    job_id     text             NOT NULL
                                REFERENCES {schema}.conveyor_job (id) ON DELETE CASCADE,
    mode       text             NOT NULL CHECK (mode IN (
                   'until_started', 'until_finished', 'throttle', 'debounce')),
    expires_at double precision,
    PRIMARY KEY (queue, key)
);
-- The cascade of a deleted job finds its record by this index.
CREATE INDEX conveyor_dedup_job_idx ON {schema}.conveyor_dedup (job_id);
