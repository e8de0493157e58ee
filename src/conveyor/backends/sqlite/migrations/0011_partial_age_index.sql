-- Conveyor schema for SQLite: waiting and running jobs leave the age index alone.
--
-- The age index only serves job_prune_finished, which reads finished jobs older than a cutoff
-- (finished_at < :cutoff, which implies finished_at IS NOT NULL, so the partial index serves
-- it). Over every job it took an entry at each insert and moved it at each change of state:
-- one more page written per enqueue and per fetch. Partial, only a job's end writes it.
DROP INDEX conveyor_job_age_idx;
CREATE INDEX conveyor_job_age_idx ON conveyor_job (state, finished_at, seq)
    WHERE finished_at IS NOT NULL;
