-- Queries of the PostgreSQL backend's schedules (cron_register, cron_fire, cron_list), named
-- as in queries.sql; {schema} is the (quoted) schema.

-- name: cron_register
INSERT INTO {schema}.conveyor_cron AS c (
    name, queue, job_name, expression, tz, catch_up, overlap, registered_at
)
SELECT name, queue, job_name, expression, tz, catch_up, overlap,
       coalesce(%(now)s::float8, extract(epoch FROM now())::float8)
FROM unnest(%(names)s::text[], %(queues)s::text[], %(job_names)s::text[],
            %(expressions)s::text[], %(tzs)s::text[], %(catch_ups)s::text[],
            %(overlaps)s::text[])
     AS s(name, queue, job_name, expression, tz, catch_up, overlap)
ON CONFLICT (name) DO UPDATE SET
    queue = excluded.queue, job_name = excluded.job_name, expression = excluded.expression,
    tz = excluded.tz, catch_up = excluded.catch_up, overlap = excluded.overlap,
    registered_at = excluded.registered_at
RETURNING c.name, c.last_tick;

-- One statement: the upsert claims the tick only while the recorded one is older (a caller
-- that races for the same tick waits for the row lock, then finds it recorded and writes
-- nothing); the job is inserted only when the claim fired. A schedule fired before any worker
-- declared it gets a bare row (cron_list leaves it out). "running" reads the statement's
-- snapshot: exact when callers fire the same tick, as workers do.
-- name: cron_fire
WITH t AS (
    SELECT coalesce(%(now)s::float8, extract(epoch FROM clock_timestamp())::float8) AS now
),
prev AS (
    SELECT c.last_tick, c.last_job_id FROM {schema}.conveyor_cron c WHERE c.name = %(name)s
),
busy AS (
    SELECT %(skip_if_running)s::boolean AND EXISTS (
        SELECT 1 FROM {schema}.conveyor_job j JOIN prev ON j.id = prev.last_job_id
        WHERE j.state NOT IN ('completed', 'failed', 'cancelled')
    ) AS busy
),
claimed AS (
    INSERT INTO {schema}.conveyor_cron AS c (
        name, queue, job_name, expression, tz, catch_up, overlap, registered_at,
        last_tick, last_status, last_fired_at, last_job_id
    )
    SELECT %(name)s, %(queue)s, %(job_name)s, '', 'UTC', 'skip', 'allow', t.now,
           %(tick)s::bigint, CASE WHEN busy.busy THEN 'skipped' ELSE 'fired' END, t.now,
           CASE WHEN busy.busy THEN NULL ELSE %(id)s::text END
    FROM t, busy
    ON CONFLICT (name) DO UPDATE SET
        last_tick = excluded.last_tick, last_status = excluded.last_status,
        last_fired_at = excluded.last_fired_at,
        last_job_id = coalesce(excluded.last_job_id, c.last_job_id)
    WHERE c.last_tick IS NULL OR c.last_tick < excluded.last_tick
    RETURNING c.last_status
),
inserted AS (
    INSERT INTO {schema}.conveyor_job (
        id, queue, name, payload, state, priority, max_attempts, run_at, enqueued_at, seq,
        keep_completed, keep_failed, group_key, group_concurrency, group_rate_count,
        group_rate_per, headers
    )
    SELECT %(id)s, %(queue)s, %(job_name)s, %(payload)s::bytea,
           CASE WHEN r.run_at > t.now THEN 'scheduled' ELSE 'queued' END,
           %(priority)s::int, %(max_attempts)s::int, r.run_at, t.now,
           nextval('{schema}.conveyor_job_seq'),
           %(keep_completed)s::float8, %(keep_failed)s::float8, %(group_key)s::text,
           %(group_concurrency)s::int, %(group_rate_count)s::int, %(group_rate_per)s::float8,
           %(headers)s::text
    FROM claimed, t,
         LATERAL (SELECT coalesce(%(run_at)s::float8, t.now + %(delay)s::float8) AS run_at) r
    WHERE claimed.last_status = 'fired'
    ON CONFLICT (id) DO NOTHING
    RETURNING queue, state
),
-- A grouped job joins its group as an insert does (see job_insert_many__grouped).
joined AS (
    INSERT INTO {schema}.conveyor_group AS g (
        queue, key, name, concurrency, rate_count, rate_per, queued, turn, quiet_at
    )
    SELECT %(queue)s, %(group_key)s::text, %(job_name)s,
           coalesce(%(group_concurrency)s::int, 0), coalesce(%(group_rate_count)s::int, 0),
           coalesce(%(group_rate_per)s::float8, 0), (inserted.state = 'queued')::int,
           t.now, t.now
    FROM inserted, t
    WHERE %(group_key)s::text IS NOT NULL
    ON CONFLICT (queue, key) DO UPDATE SET
        queued = g.queued + excluded.queued, name = excluded.name,
        concurrency = excluded.concurrency, rate_count = excluded.rate_count,
        rate_per = excluded.rate_per,
        turn = CASE WHEN g.served_at IS NULL THEN g.turn ELSE greatest(
            g.served_at, g.blocked_until,
            CASE WHEN excluded.rate_count > 0 AND cardinality(g.starts) >= excluded.rate_count
                THEN g.starts[cardinality(g.starts) - excluded.rate_count + 1]
                     + excluded.rate_per END) END
),
registered AS (
    INSERT INTO {schema}.conveyor_queue (name)
    SELECT %(queue)s FROM claimed WHERE claimed.last_status = 'fired'
    ON CONFLICT (name) DO NOTHING
),
woken AS (
    SELECT pg_notify(%(channel)s, 'q:' || queue) FROM inserted WHERE state = 'queued'
)
SELECT (SELECT last_status FROM claimed) AS status,
       (SELECT last_tick FROM prev) AS previous_tick,
       (SELECT count(*) FROM woken) AS woken;

-- name: cron_list
SELECT name, queue, job_name, expression, tz, catch_up, overlap, registered_at,
       last_tick, last_status, last_fired_at, last_job_id
FROM {schema}.conveyor_cron WHERE expression <> '' ORDER BY name;
