-- Queries of the SQLite backend's schedules (cron_register, cron_fire, cron_list), named as
-- in queries.sql. A fire runs its statements in one BEGIN IMMEDIATE transaction, with the
-- job insert of job_insert_many.

-- name: cron_register
INSERT INTO conveyor_cron (
    name, queue, job_name, expression, tz, catch_up, overlap, registered_at
) VALUES (
    :name, :queue, :job_name, :expression, :tz, :catch_up, :overlap, :now
)
ON CONFLICT (name) DO UPDATE SET
    queue = excluded.queue, job_name = excluded.job_name, expression = excluded.expression,
    tz = excluded.tz, catch_up = excluded.catch_up, overlap = excluded.overlap,
    registered_at = excluded.registered_at
RETURNING last_tick;

-- The schedule's latest tick and whether the job of its last fired tick is unfinished.
-- name: cron_fire__last
SELECT c.last_tick,
       EXISTS (
           SELECT 1 FROM conveyor_job j
           WHERE j.id = c.last_job_id AND j.state NOT IN ('completed', 'failed', 'cancelled')
       ) AS running
FROM conveyor_cron c WHERE c.name = :name;

-- A schedule fired before any worker declared it gets a bare row (cron_list leaves it out).
-- name: cron_fire
INSERT INTO conveyor_cron (
    name, queue, job_name, expression, tz, catch_up, overlap, registered_at,
    last_tick, last_status, last_fired_at, last_job_id
) VALUES (
    :name, :queue, :job_name, '', 'UTC', 'skip', 'allow', :now,
    :tick, :status, :now, :job_id
)
ON CONFLICT (name) DO UPDATE SET
    last_tick = excluded.last_tick, last_status = excluded.last_status,
    last_fired_at = excluded.last_fired_at,
    last_job_id = coalesce(excluded.last_job_id, conveyor_cron.last_job_id);

-- name: cron_list
SELECT name, queue, job_name, expression, tz, catch_up, overlap, registered_at,
       last_tick, last_status, last_fired_at, last_job_id
FROM conveyor_cron WHERE expression <> '' ORDER BY name;
