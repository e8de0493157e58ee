-- Conveyor schema for SQLite, version 5: job progress, and retention per job.

-- The latest progress a handler reported: a fraction from 0 to 1, a message, and when.
ALTER TABLE conveyor_job ADD COLUMN progress REAL;
ALTER TABLE conveyor_job ADD COLUMN progress_message TEXT;
ALTER TABLE conveyor_job ADD COLUMN progress_at REAL;

-- The job's own retention (seconds after it completed / failed; NULL: the queue's policy) and
-- the instant it expires, set by the step that finishes it.
ALTER TABLE conveyor_job ADD COLUMN keep_completed REAL;
ALTER TABLE conveyor_job ADD COLUMN keep_failed REAL;
ALTER TABLE conveyor_job ADD COLUMN expires_at REAL;

-- job_prune_finished: the expired jobs, earliest first, read without touching the others.
CREATE INDEX conveyor_job_expiry_idx ON conveyor_job (expires_at, seq)
    WHERE expires_at IS NOT NULL;
