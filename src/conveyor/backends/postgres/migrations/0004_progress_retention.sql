-- Conveyor schema for PostgreSQL, version 4: job progress, and retention per job.

-- The latest progress a handler reported: a fraction from 0 to 1, a message, and when. Written
-- while the job is active, to no indexed column, so each write can stay a HOT update.
ALTER TABLE {schema}.conveyor_job
    ADD COLUMN progress double precision,
    ADD COLUMN progress_message text,
    ADD COLUMN progress_at double precision,
    -- The job's own retention (seconds after it completed / failed; NULL: the queue's policy)
    -- and the instant it expires, set by the statement that finishes it.
    ADD COLUMN keep_completed double precision,
    ADD COLUMN keep_failed double precision,
    ADD COLUMN expires_at double precision;

-- job_prune_finished: the expired jobs, earliest first, read without touching the others.
CREATE INDEX conveyor_job_expiry_idx ON {schema}.conveyor_job (expires_at, seq)
    WHERE expires_at IS NOT NULL;
