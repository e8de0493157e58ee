-- Conveyor schema for SQLite: dedup keys (enqueue(..., dedup=...)).

-- The job holding each dedup key of a queue, the mode it took the key with and, for a throttle,
-- when the key is free again whatever the job does. Whether the key is still held is decided
-- at the next insert with it, from the holder job (see conveyor.drivers.common.dedup_held).
CREATE TABLE conveyor_dedup (
    queue      TEXT NOT NULL,
    key        TEXT NOT NULL,
    job_id     TEXT NOT NULL,
    mode       TEXT NOT NULL CHECK (mode IN (
                   'until_started', 'until_finished', 'throttle', 'debounce')),
    expires_at REAL,
    PRIMARY KEY (queue, key)
);
CREATE INDEX conveyor_dedup_job_idx ON conveyor_dedup (job_id);

-- A deleted job (pruned, purged, trimmed by retention) frees its key: records never outnumber
-- jobs, whichever statement deleted them.
CREATE TRIGGER conveyor_dedup_forget AFTER DELETE ON conveyor_job
BEGIN
    DELETE FROM conveyor_dedup WHERE job_id = OLD.id;
END;
