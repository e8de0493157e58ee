-- Conveyor schema for SQLite, version 2: attempt history, isolated attempts, job routes, and
-- indexes that keep listing and retention independent of how many jobs there are.

-- The errors of a job's attempts, oldest first: a JSON array of [attempt, at, error].
ALTER TABLE conveyor_job ADD COLUMN errors TEXT;
-- The current attempt runs alone in its worker (a loss is then evidence against the job).
ALTER TABLE conveyor_job ADD COLUMN isolated INTEGER NOT NULL DEFAULT 0
    CHECK (isolated IN (0, 1));

-- job_list: one keyset range per (queue, state), newest first.
CREATE INDEX conveyor_job_list_idx ON conveyor_job (queue, state, seq);

-- job_fetch for a worker that serves only some of a queue's names, when the jobs it can run lie
-- behind many it cannot: one range per name, however many other jobs wait ahead.
CREATE INDEX conveyor_job_named_idx ON conveyor_job (queue, name, priority, run_at, seq)
    WHERE state = 'queued';

-- job_prune_finished by age, across queues: the oldest finished jobs of one state.
CREATE INDEX conveyor_job_age_idx ON conveyor_job (state, finished_at, seq);

-- Retention by count (the newest completed jobs of a queue) reads this one.
DROP INDEX conveyor_job_finished_idx;
CREATE INDEX conveyor_job_finished_idx ON conveyor_job (queue, state, finished_at, seq)
    WHERE state = 'completed';

-- The job names a worker has handlers for (JSON array): a job one live worker knows is never
-- failed as unknown by another.
ALTER TABLE conveyor_worker ADD COLUMN names TEXT NOT NULL DEFAULT '[]';

-- Which queue serves which job name, as workers declare it (for enqueue_by_name).
CREATE TABLE conveyor_route (
    name       TEXT NOT NULL PRIMARY KEY,
    queue      TEXT NOT NULL,
    updated_at REAL NOT NULL
);
