-- Queries of the PostgreSQL backend: one statement per section, named after the driver
-- operation (helper steps are <operation>__<step>), so each operation is one round trip and one
-- transaction. {schema} is the quoted schema name, filled in when the driver is made;
-- parameters are psycopg's %(name)s; a batch travels as parallel arrays read with unnest,
-- sent in binary (%(name)b): several times cheaper to encode than array text.
-- Times are double precision epoch seconds; :now NULL means the server's clock.

-- name: job_insert_many
-- Duplicates (an id that exists, or repeats in the batch) are left alone: the first row of an
-- id that was inserted reports inserted_state, the others the state they find (read by primary
-- key for those rows only). The main query's snapshot predates the insert, so `existing` shows
-- only jobs that were there before.
-- %(instance)s is NULL on the driver's own connection; on a caller's connection it is this
-- store's instance id, and nothing is written unless the connection reaches this very store.
-- The clock is clock_timestamp(), not now(): in a caller's transaction now() is when that
-- transaction began, and a job's delay counts from its enqueue.
WITH t AS (
    SELECT coalesce(%(now)s::float8, extract(epoch FROM clock_timestamp())::float8) AS now
),
guard AS (
    SELECT %(instance)s::text IS NULL OR EXISTS (
        SELECT 1 FROM {schema}.conveyor_meta WHERE key = 'instance' AND value = %(instance)s::text
    ) AS ok
),
input AS (
    SELECT i.id, i.queue, i.name, i.payload, i.priority, i.max_attempts, i.ord, t.now,
           coalesce(i.run_at, t.now + i.delay) AS run_at, i.keep_completed, i.keep_failed,
           i.headers
    FROM unnest(%(ids)b::text[], %(queues)b::text[], %(names)b::text[], %(payloads)b::bytea[],
                %(priorities)b::int[], %(max_attempts)b::int[], %(run_ats)b::float8[],
                %(delays)b::float8[], %(keep_completeds)b::float8[], %(keep_faileds)b::float8[],
                %(headers)b::text[])
         WITH ORDINALITY AS i(id, queue, name, payload, priority, max_attempts, run_at, delay,
                              keep_completed, keep_failed, headers, ord),
         t, guard
    WHERE guard.ok
),
inserted AS (
    INSERT INTO {schema}.conveyor_job (
        id, queue, name, payload, state, priority, max_attempts, run_at, enqueued_at, seq,
        keep_completed, keep_failed, headers
    )
    SELECT id, queue, name, payload,
           CASE WHEN run_at > now THEN 'scheduled' ELSE 'queued' END,
           priority, max_attempts, run_at, now, nextval('{schema}.conveyor_job_seq'),
           keep_completed, keep_failed, headers
    FROM (SELECT * FROM input ORDER BY ord) ordered
    ON CONFLICT (id) DO NOTHING
    RETURNING id, queue, state
),
registered AS (
    INSERT INTO {schema}.conveyor_queue (name) SELECT DISTINCT queue FROM input
    ON CONFLICT (name) DO NOTHING
),
woken AS (
    SELECT pg_notify(%(channel)s, 'q:' || queue)
    FROM (SELECT DISTINCT queue FROM inserted WHERE state = 'queued') q
)
SELECT input.id, inserted.state AS inserted_state,
       CASE WHEN inserted.id IS NULL THEN (
           SELECT existing.state FROM {schema}.conveyor_job existing
           WHERE existing.id = input.id
       ) END AS existing_state,
       (SELECT count(*) FROM woken) AS woken
FROM input
LEFT JOIN inserted ON inserted.id = input.id
ORDER BY input.ord;

-- name: job_insert_many__one
-- job_insert_many of one job, with plain parameters: what a single enqueue sends. Its plan is
-- cached (PostgreSQL keeps a generic plan for it; the array form is planned on every call),
-- and its parameters are cheaper to send: about three times the single-enqueue rate.
WITH t AS (
    SELECT coalesce(%(now)s::float8, extract(epoch FROM clock_timestamp())::float8) AS now
),
guard AS (
    SELECT %(instance)s::text IS NULL OR EXISTS (
        SELECT 1 FROM {schema}.conveyor_meta WHERE key = 'instance' AND value = %(instance)s::text
    ) AS ok
),
input AS (
    SELECT %(id)s::text AS id, %(queue)s::text AS queue, %(name)s::text AS name,
           %(payload)s::bytea AS payload, %(priority)s::int AS priority,
           %(max_attempts)s::int AS max_attempts, 1 AS ord, t.now,
           coalesce(%(run_at)s::float8, t.now + %(delay)s::float8) AS run_at,
           %(keep_completed)s::float8 AS keep_completed, %(keep_failed)s::float8 AS keep_failed,
           %(headers)s::text AS headers
    FROM t, guard
    WHERE guard.ok
),
inserted AS (
    INSERT INTO {schema}.conveyor_job (
        id, queue, name, payload, state, priority, max_attempts, run_at, enqueued_at, seq,
        keep_completed, keep_failed, headers
    )
    SELECT id, queue, name, payload,
           CASE WHEN run_at > now THEN 'scheduled' ELSE 'queued' END,
           priority, max_attempts, run_at, now, nextval('{schema}.conveyor_job_seq'),
           keep_completed, keep_failed, headers
    FROM (SELECT * FROM input ORDER BY ord) ordered
    ON CONFLICT (id) DO NOTHING
    RETURNING id, queue, state
),
registered AS (
    INSERT INTO {schema}.conveyor_queue (name) SELECT DISTINCT queue FROM input
    ON CONFLICT (name) DO NOTHING
),
woken AS (
    SELECT pg_notify(%(channel)s, 'q:' || queue)
    FROM (SELECT DISTINCT queue FROM inserted WHERE state = 'queued') q
)
SELECT input.id, inserted.state AS inserted_state,
       CASE WHEN inserted.id IS NULL THEN (
           SELECT existing.state FROM {schema}.conveyor_job existing
           WHERE existing.id = input.id
       ) END AS existing_state,
       (SELECT count(*) FROM woken) AS woken
FROM input
LEFT JOIN inserted ON inserted.id = input.id
ORDER BY input.ord;

-- name: job_fetch
-- One statement: of the served queues that are not paused, the due scheduled and retrying jobs
-- and each queue's first %(limit)s queued jobs (one ordered range of the ready index per queue,
-- never a sort of the backlog) are locked, skipping rows another fetch holds; the overall first
-- %(limit)s of those are leased and the other due jobs become queued. Rows are updated by id
-- from arrays, which the planner always reads through the primary key (a join on an estimated
-- row count could choose to scan the whole table).
-- Grouped jobs are not in the ready index: first (with %(probe)s) it looks whether a served
-- queue has a group eligible now or a grouped job due, the first entry of two partial indexes
-- that stay empty in a queue without groups. If so it leases nothing and returns one row with
-- no job that says so (groups_waiting, groups_due, plain_waiting, fetched_at): _groups serves
-- that fetch. Else the one row per job leased, as before.
WITH t AS (
    SELECT coalesce(%(now)s::float8, extract(epoch FROM now())::float8) AS now
),
unpaused AS (
    SELECT q.name FROM unnest(%(queues)b::text[]) AS q(name)
    WHERE NOT EXISTS (
        SELECT 1 FROM {schema}.conveyor_queue p WHERE p.name = q.name AND p.paused
    )
),
probe AS (
    SELECT p.groups_ready OR p.groups_due AS grouped, p.groups_ready, p.groups_due
    FROM (
        SELECT %(probe)s::bool AND EXISTS (
                   SELECT 1 FROM unpaused u CROSS JOIN LATERAL (
                       SELECT 1 FROM {schema}.conveyor_group g
                       WHERE g.queue = u.name AND g.queued > 0
                         AND (g.concurrency = 0 OR g.active < g.concurrency)
                         AND g.turn <= t.now
                       ORDER BY g.turn
                       LIMIT 1
                   ) x)
               AS groups_ready,
               %(probe)s::bool AND EXISTS (
                   SELECT 1 FROM unpaused u CROSS JOIN LATERAL (
                       SELECT 1 FROM {schema}.conveyor_job j
                       WHERE j.queue = u.name AND j.state IN ('scheduled', 'retrying')
                         AND j.group_key IS NOT NULL AND j.run_at <= t.now
                       ORDER BY j.run_at
                       LIMIT 1
                   ) x)
               AS groups_due
        FROM t
    ) p
),
served AS (
    SELECT u.name FROM unpaused u, probe WHERE NOT probe.grouped
),
due AS (
    SELECT d.id, d.priority, d.run_at, d.seq
    FROM served CROSS JOIN t CROSS JOIN LATERAL (
        SELECT j.id, j.priority, j.run_at, j.seq FROM {schema}.conveyor_job j
        WHERE j.queue = served.name AND j.state IN ('scheduled', 'retrying')
          AND j.run_at <= t.now AND j.group_key IS NULL
        FOR UPDATE SKIP LOCKED
    ) d
),
ready AS (
    SELECT r.id, r.priority, r.run_at, r.seq
    FROM served CROSS JOIN LATERAL (
        SELECT j.id, j.priority, j.run_at, j.seq FROM {schema}.conveyor_job j
        WHERE j.queue = served.name AND j.state = 'queued' AND j.group_key IS NULL
        ORDER BY j.priority, j.run_at, j.seq
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) r
),
chosen AS (
    SELECT c.id FROM (SELECT * FROM ready UNION ALL SELECT * FROM due) c
    ORDER BY c.priority, c.run_at, c.seq
    LIMIT %(limit)s
),
promoted AS (
    UPDATE {schema}.conveyor_job j SET state = 'queued'
    WHERE j.id = ANY(ARRAY(SELECT id FROM due WHERE id NOT IN (SELECT id FROM chosen)))
),
leased AS (
    UPDATE {schema}.conveyor_job j
    SET state = 'active',
        attempt = j.attempt + 1,
        started_at = t.now,
        lease_token = %(receipt)s::text || '-' || substr(md5(random()::text), 1, 16),
        lease_expires_at = t.now + %(lease_seconds)s::float8,
        worker_id = %(worker_id)s::text,
        cancel_requested = false,
        isolated = false
    FROM t
    WHERE j.id = ANY(ARRAY(SELECT id FROM chosen))
    RETURNING j.*
)
SELECT leased.*, probe.grouped AS groups_waiting, probe.groups_due, t.now AS fetched_at,
       CASE WHEN probe.grouped THEN EXISTS (
           SELECT 1 FROM unpaused u CROSS JOIN LATERAL (
               SELECT 1 FROM {schema}.conveyor_job j
               WHERE j.queue = u.name AND j.state = 'queued' AND j.group_key IS NULL
               ORDER BY j.priority, j.run_at, j.seq
               LIMIT 1
           ) x
       ) OR EXISTS (
           SELECT 1 FROM unpaused u CROSS JOIN LATERAL (
               SELECT 1 FROM {schema}.conveyor_job j
               WHERE j.queue = u.name AND j.state IN ('scheduled', 'retrying')
                 AND j.run_at <= t.now AND j.group_key IS NULL
               ORDER BY j.run_at, j.seq
               LIMIT 1
           ) x
       ) END AS plain_waiting
FROM probe CROSS JOIN t LEFT JOIN leased ON true;

-- job_fetch of rate-limited queues, inside the transaction that holds their rows of
-- conveyor_rate_limit (rate_limit__lock): as job_fetch, at the time the lock was taken, with no
-- more of a queue's jobs than its %(caps)s entry (the queues without a limit get %(limit)s).
-- Each queue offers at most its cap of queued jobs, and a window over the queue's offers keeps
-- due jobs within it too. It probes for grouped work and answers as job_fetch does.
-- name: job_fetch__rate_limited
WITH t AS (
    SELECT %(now)s::float8 AS now
),
unpaused AS (
    SELECT q.name, q.cap FROM unnest(%(queues)s::text[], %(caps)s::int[]) AS q(name, cap)
    WHERE NOT EXISTS (
        SELECT 1 FROM {schema}.conveyor_queue p WHERE p.name = q.name AND p.paused
    )
),
probe AS (
    SELECT p.groups_ready OR p.groups_due AS grouped, p.groups_ready, p.groups_due
    FROM (
        SELECT %(probe)s::bool AND EXISTS (
                   SELECT 1 FROM unpaused u CROSS JOIN LATERAL (
                       SELECT 1 FROM {schema}.conveyor_group g
                       WHERE g.queue = u.name AND g.queued > 0
                         AND (g.concurrency = 0 OR g.active < g.concurrency)
                         AND g.turn <= t.now
                       ORDER BY g.turn
                       LIMIT 1
                   ) x)
               AS groups_ready,
               %(probe)s::bool AND EXISTS (
                   SELECT 1 FROM unpaused u CROSS JOIN LATERAL (
                       SELECT 1 FROM {schema}.conveyor_job j
                       WHERE j.queue = u.name AND j.state IN ('scheduled', 'retrying')
                         AND j.group_key IS NOT NULL AND j.run_at <= t.now
                       ORDER BY j.run_at
                       LIMIT 1
                   ) x)
               AS groups_due
        FROM t
    ) p
),
served AS (
    SELECT u.name, u.cap FROM unpaused u, probe WHERE NOT probe.grouped
),
due AS (
    SELECT served.name AS queue, d.id, d.priority, d.run_at, d.seq
    FROM served CROSS JOIN t CROSS JOIN LATERAL (
        SELECT j.id, j.priority, j.run_at, j.seq FROM {schema}.conveyor_job j
        WHERE j.queue = served.name AND j.state IN ('scheduled', 'retrying')
          AND j.run_at <= t.now AND j.group_key IS NULL
        FOR UPDATE SKIP LOCKED
    ) d
),
ready AS (
    SELECT served.name AS queue, r.id, r.priority, r.run_at, r.seq
    FROM served CROSS JOIN LATERAL (
        SELECT j.id, j.priority, j.run_at, j.seq FROM {schema}.conveyor_job j
        WHERE j.queue = served.name AND j.state = 'queued' AND j.group_key IS NULL
        ORDER BY j.priority, j.run_at, j.seq
        LIMIT least(%(limit)s, served.cap)
        FOR UPDATE SKIP LOCKED
    ) r
),
chosen AS (
    SELECT c.id FROM (
        SELECT u.*, row_number() OVER (
            PARTITION BY u.queue ORDER BY u.priority, u.run_at, u.seq
        ) AS place
        FROM (SELECT * FROM ready UNION ALL SELECT * FROM due) u
    ) c
    JOIN served ON served.name = c.queue
    WHERE c.place <= served.cap
    ORDER BY c.priority, c.run_at, c.seq
    LIMIT %(limit)s
),
promoted AS (
    UPDATE {schema}.conveyor_job j SET state = 'queued'
    WHERE j.id = ANY(ARRAY(SELECT id FROM due WHERE id NOT IN (SELECT id FROM chosen)))
),
leased AS (
    UPDATE {schema}.conveyor_job j
    SET state = 'active',
        attempt = j.attempt + 1,
        started_at = t.now,
        lease_token = %(receipt)s::text || '-' || substr(md5(random()::text), 1, 16),
        lease_expires_at = t.now + %(lease_seconds)s::float8,
        worker_id = %(worker_id)s::text,
        cancel_requested = false,
        isolated = false
    FROM t
    WHERE j.id = ANY(ARRAY(SELECT id FROM chosen))
    RETURNING j.*
)
SELECT leased.*, probe.grouped AS groups_waiting, probe.groups_due, t.now AS fetched_at,
       CASE WHEN probe.grouped THEN EXISTS (
           SELECT 1 FROM unpaused u CROSS JOIN LATERAL (
               SELECT 1 FROM {schema}.conveyor_job j
               WHERE j.queue = u.name AND j.state = 'queued' AND j.group_key IS NULL
               ORDER BY j.priority, j.run_at, j.seq
               LIMIT 1
           ) x
       ) OR EXISTS (
           SELECT 1 FROM unpaused u CROSS JOIN LATERAL (
               SELECT 1 FROM {schema}.conveyor_job j
               WHERE j.queue = u.name AND j.state IN ('scheduled', 'retrying')
                 AND j.run_at <= t.now AND j.group_key IS NULL
               ORDER BY j.run_at, j.seq
               LIMIT 1
           ) x
       ) END AS plain_waiting
FROM probe CROSS JOIN t LEFT JOIN leased ON true;

-- The jobs a fetch with this receipt leased (every lease token it gives starts with it):
-- what the fetch returns when it runs again after its reply was lost.
-- name: job_fetch__receipt
SELECT * FROM {schema}.conveyor_job
WHERE state = 'active' AND worker_id = %(worker_id)s::text
  AND starts_with(lease_token, %(receipt)s::text || '-');

-- name: job_extend_leases
WITH t AS (
    SELECT coalesce(%(now)s::float8, extract(epoch FROM now())::float8) AS now
),
l AS (
    SELECT * FROM unnest(%(ids)b::text[], %(tokens)b::text[], %(isolated)b::bool[])
        AS l(id, token, isolated)
)
UPDATE {schema}.conveyor_job j
SET lease_expires_at = t.now + %(lease_seconds)s::float8, isolated = j.isolated OR l.isolated
FROM l, t
WHERE j.id = ANY(%(ids)b::text[]) AND j.id = l.id AND (j.state = 'active') IS TRUE
  AND j.lease_token = l.token
RETURNING j.id, j.lease_token, j.cancel_requested;

-- name: job_finish_many
-- Every finish is fenced on (state 'active', lease_token) and keeps the token, so the same
-- finish sent again finds its work done (current_state/current_token, read from the snapshot
-- before this statement). Cancel wins: a retry, snooze or requeue of a job whose cancel was
-- requested ends it cancelled with %(cancel_errors)s instead; it is decided on the row being
-- updated, so a cancel that lands meanwhile is seen. Completing keeps the newest %(keep)s
-- completed jobs of the queue: the older ones, a bounded number per call (maintenance prunes
-- any rest); this statement cannot see the jobs it completes itself, so when they alone are
-- more than %(keep)s, the caller trims them with job_prune_finished__trim_completed.
WITH t AS (
    SELECT coalesce(%(now)s::float8, extract(epoch FROM now())::float8) AS now
),
f AS (
    SELECT * FROM unnest(%(ids)b::text[], %(tokens)b::text[], %(kinds)b::text[],
                         %(results)b::bytea[], %(errors)b::text[], %(cancel_errors)b::text[],
                         %(delays)b::float8[])
        WITH ORDINALITY AS f(id, token, kind, result, error, cancel_error, delay, ord)
),
done AS (
    UPDATE {schema}.conveyor_job j
    SET state = CASE
            WHEN f.kind IN ('retry', 'snooze', 'requeue') AND j.cancel_requested THEN 'cancelled'
            WHEN f.kind = 'complete' THEN 'completed'
            WHEN f.kind = 'retry' THEN 'retrying'
            WHEN f.kind = 'snooze' THEN 'scheduled'
            WHEN f.kind = 'requeue' THEN 'queued'
            WHEN f.kind = 'fail' THEN 'failed'
            ELSE 'cancelled' END,
        finished_at = CASE
            WHEN f.kind IN ('complete', 'fail', 'cancel') OR j.cancel_requested THEN t.now
            ELSE j.finished_at END,
        result = CASE
            WHEN f.kind = 'complete' THEN f.result
            WHEN f.kind IN ('fail', 'cancel') OR j.cancel_requested THEN NULL
            ELSE j.result END,
        expires_at = CASE
            WHEN f.kind = 'complete' THEN t.now + j.keep_completed
            WHEN f.kind = 'fail' THEN t.now + j.keep_failed END,
        error = CASE
            WHEN f.kind = 'complete' THEN NULL
            WHEN f.kind IN ('retry', 'snooze', 'requeue') AND j.cancel_requested
                THEN f.cancel_error
            ELSE coalesce(f.error, j.error) END,
        errors = CASE
            WHEN f.kind = 'complete' THEN j.errors
            WHEN f.kind IN ('retry', 'snooze', 'requeue') AND j.cancel_requested
                THEN {schema}.conveyor_history_add(j.errors, j.attempt, t.now, f.cancel_error,
                                                   %(keep_errors)s, %(error_chars)s)
            WHEN f.error IS NULL THEN j.errors
            ELSE {schema}.conveyor_history_add(j.errors, j.attempt, t.now, f.error,
                                               %(keep_errors)s, %(error_chars)s) END,
        run_at = CASE
            WHEN j.cancel_requested THEN j.run_at
            WHEN f.kind IN ('retry', 'snooze') THEN t.now + f.delay
            ELSE j.run_at END,
        attempt = CASE
            WHEN f.kind IN ('snooze', 'requeue') AND NOT j.cancel_requested
                THEN greatest(j.attempt - 1, 0)
            ELSE j.attempt END,
        lease_expires_at = NULL,
        worker_id = NULL,
        cancel_requested = false,
        isolated = false
    FROM f, t
    -- "(...) IS TRUE" keeps the planner on the primary key: a bare state = 'active' lets it
    -- pick the partial index of active jobs, which it would read whole.
    WHERE j.id = ANY(%(ids)b::text[]) AND j.id = f.id AND (j.state = 'active') IS TRUE
      AND j.lease_token = f.token
    RETURNING j.id, j.queue, j.state, j.group_key, f.token
),
-- The records of the groups whose jobs left active, locked in order, then counted (one update
-- per group); a group that was full and has queued jobs gets room: listeners are woken.
moves AS MATERIALIZED (
    SELECT m.queue, m.group_key AS key, sum((m.state = 'queued')::int)::int AS queued_by,
           sum(-1)::int AS active_by
    FROM done m WHERE m.group_key IS NOT NULL
    GROUP BY m.queue, m.group_key
    ORDER BY m.queue, m.group_key
),
held AS MATERIALIZED (
    SELECT m.*, g.queued, g.active, g.concurrency, g.turn FROM moves m CROSS JOIN LATERAL (
        SELECT g.queued, g.active, g.concurrency, g.turn FROM {schema}.conveyor_group g
        WHERE g.queue = m.queue AND g.key = m.key
        FOR UPDATE
    ) g
),
counted AS (
    UPDATE {schema}.conveyor_group g
    SET queued = greatest(g.queued + h.queued_by, 0), active = greatest(g.active + h.active_by, 0)
    FROM held h
    WHERE g.queue = h.queue AND g.key = h.key
),
freed AS (
    SELECT pg_notify(%(channel)s, 'q:' || queue)
    FROM (
        SELECT DISTINCT h.queue FROM held h, t
        WHERE h.queued > 0 AND h.concurrency > 0 AND h.active >= h.concurrency
          AND h.active + h.active_by < h.concurrency AND h.turn <= t.now
    ) q
),
trimmed AS (
    DELETE FROM {schema}.conveyor_job
    WHERE id IN (
        SELECT old.id
        FROM (SELECT queue, count(*) AS n FROM done WHERE state = 'completed' GROUP BY queue) c
        CROSS JOIN LATERAL (
            SELECT o.id FROM {schema}.conveyor_job o
            WHERE o.queue = c.queue AND o.state = 'completed'
              AND (%(keep)s::int <= c.n OR (o.finished_at, o.seq) < (
                  SELECT b.finished_at, b.seq FROM {schema}.conveyor_job b
                  WHERE b.queue = c.queue AND b.state = 'completed'
                  ORDER BY b.finished_at DESC, b.seq DESC
                  OFFSET greatest(%(keep)s::int - c.n - 1, 0) LIMIT 1))
            ORDER BY o.finished_at, o.seq
            LIMIT c.n + 100
        ) old
        WHERE %(keep)s::int IS NOT NULL
    )
),
woken AS (
    SELECT pg_notify(%(channel)s, 'q:' || queue)
    FROM (SELECT DISTINCT queue FROM done WHERE state = 'queued') q
)
SELECT f.id, done.queue, done.state,
       CASE WHEN done.id IS NULL THEN (
           SELECT c.state FROM {schema}.conveyor_job c WHERE c.id = f.id
       ) END AS current_state,
       CASE WHEN done.id IS NULL THEN (
           SELECT c.lease_token FROM {schema}.conveyor_job c WHERE c.id = f.id
       ) END AS current_token,
       (SELECT count(*) FROM woken) AS woken, (SELECT count(*) FROM freed) AS freed
FROM f
LEFT JOIN done ON done.id = f.id AND done.token = f.token
ORDER BY f.ord;

-- name: job_expired
SELECT * FROM {schema}.conveyor_job
WHERE state = 'active'
  AND lease_expires_at <= coalesce(%(now)s::float8, extract(epoch FROM now())::float8)
ORDER BY lease_expires_at, seq
LIMIT %(limit)s;

-- name: job_rescue_many
-- A rescue applies only to a job still active with the token the rescuer saw, its lease still
-- expired; it takes the lease away (the token too: a late finish of the lost attempt is then
-- refused). Cancel wins over a requeue, decided on the row being updated.
WITH t AS (
    SELECT coalesce(%(now)s::float8, extract(epoch FROM now())::float8) AS now
),
r AS (
    SELECT * FROM unnest(%(ids)b::text[], %(tokens)b::text[], %(kinds)b::text[],
                         %(stalls)b::int[], %(errors)b::text[], %(cancel_errors)b::text[])
        WITH ORDINALITY AS r(id, token, kind, stalls, error, cancel_error, ord)
),
done AS (
    UPDATE {schema}.conveyor_job j
    SET state = CASE
            WHEN r.kind = 'requeue' AND NOT j.cancel_requested THEN 'queued'
            WHEN r.kind = 'fail' THEN 'failed'
            ELSE 'cancelled' END,
        attempt = CASE
            WHEN r.kind = 'requeue' AND NOT j.cancel_requested THEN greatest(j.attempt - 1, 0)
            ELSE j.attempt END,
        run_at = CASE
            WHEN r.kind = 'requeue' AND NOT j.cancel_requested THEN t.now
            ELSE j.run_at END,
        finished_at = CASE
            WHEN r.kind = 'requeue' AND NOT j.cancel_requested THEN j.finished_at
            ELSE t.now END,
        result = CASE
            WHEN r.kind = 'requeue' AND NOT j.cancel_requested THEN j.result
            ELSE NULL END,
        expires_at = CASE WHEN r.kind = 'fail' THEN t.now + j.keep_failed END,
        stalls = r.stalls,
        error = CASE WHEN r.kind = 'requeue' AND j.cancel_requested THEN r.cancel_error
            ELSE r.error END,
        errors = {schema}.conveyor_history_add(
            j.errors, j.attempt, t.now,
            CASE WHEN r.kind = 'requeue' AND j.cancel_requested THEN r.cancel_error
                ELSE r.error END,
            %(keep_errors)s, %(error_chars)s),
        lease_token = NULL,
        lease_expires_at = NULL,
        worker_id = NULL,
        cancel_requested = false,
        isolated = false
    FROM r, t
    WHERE j.id = ANY(%(ids)b::text[]) AND j.id = r.id AND (j.state = 'active') IS TRUE
      AND j.lease_token = r.token AND j.lease_expires_at <= t.now
    RETURNING j.id, j.queue, j.state, j.group_key, r.token
),
-- The records of the groups whose jobs left active, locked in order, then counted (one update
-- per group); a group that was full and has queued jobs gets room: listeners are woken.
moves AS MATERIALIZED (
    SELECT m.queue, m.group_key AS key, sum((m.state = 'queued')::int)::int AS queued_by,
           sum(-1)::int AS active_by
    FROM done m WHERE m.group_key IS NOT NULL
    GROUP BY m.queue, m.group_key
    ORDER BY m.queue, m.group_key
),
held AS MATERIALIZED (
    SELECT m.*, g.queued, g.active, g.concurrency, g.turn FROM moves m CROSS JOIN LATERAL (
        SELECT g.queued, g.active, g.concurrency, g.turn FROM {schema}.conveyor_group g
        WHERE g.queue = m.queue AND g.key = m.key
        FOR UPDATE
    ) g
),
counted AS (
    UPDATE {schema}.conveyor_group g
    SET queued = greatest(g.queued + h.queued_by, 0), active = greatest(g.active + h.active_by, 0)
    FROM held h
    WHERE g.queue = h.queue AND g.key = h.key
),
freed AS (
    SELECT pg_notify(%(channel)s, 'q:' || queue)
    FROM (
        SELECT DISTINCT h.queue FROM held h, t
        WHERE h.queued > 0 AND h.concurrency > 0 AND h.active >= h.concurrency
          AND h.active + h.active_by < h.concurrency AND h.turn <= t.now
    ) q
),
woken AS (
    SELECT pg_notify(%(channel)s, 'q:' || queue)
    FROM (SELECT DISTINCT queue FROM done WHERE state = 'queued') q
)
SELECT r.id, done.state,
       done.id IS NOT NULL OR EXISTS (
           SELECT 1 FROM {schema}.conveyor_job c WHERE c.id = r.id
       ) AS found,
       (SELECT count(*) FROM woken) AS woken, (SELECT count(*) FROM freed) AS freed
FROM r
LEFT JOIN done ON done.id = r.id AND done.token = r.token
ORDER BY r.ord;

-- name: job_promote_due
WITH t AS (
    SELECT coalesce(%(now)s::float8, extract(epoch FROM now())::float8) AS now
),
due AS (
    SELECT d.id FROM {schema}.conveyor_queue q CROSS JOIN t CROSS JOIN LATERAL (
        SELECT j.id, j.run_at, j.seq FROM {schema}.conveyor_job j
        WHERE j.queue = q.name AND j.state IN ('scheduled', 'retrying') AND j.run_at <= t.now
        ORDER BY j.run_at, j.seq
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) d
    ORDER BY d.run_at, d.seq
    LIMIT %(limit)s
),
moved AS (
    UPDATE {schema}.conveyor_job j SET state = 'queued'
    WHERE j.id = ANY(ARRAY(SELECT id FROM due))
    RETURNING j.queue, j.name, j.group_key, j.group_concurrency, j.group_rate_count,
              j.group_rate_per
),
-- The groups of the grouped jobs made queued count them, in order (a record deleted while the
-- group was idle is made anew from its job, its turn now).
placed AS (
    INSERT INTO {schema}.conveyor_group AS g (
        queue, key, name, concurrency, rate_count, rate_per, queued, turn, quiet_at
    )
    SELECT m.queue, m.group_key, min(m.name), min(coalesce(m.group_concurrency, 0)),
           min(coalesce(m.group_rate_count, 0)), min(coalesce(m.group_rate_per, 0)), count(*),
           t.now, t.now
    FROM moved m, t WHERE m.group_key IS NOT NULL
    GROUP BY m.queue, m.group_key, t.now
    ORDER BY m.queue, m.group_key
    ON CONFLICT (queue, key) DO UPDATE SET queued = g.queued + excluded.queued
),
woken AS (
    SELECT pg_notify(%(channel)s, 'q:' || queue) FROM (SELECT DISTINCT queue FROM moved) q
)
SELECT (SELECT count(*) FROM moved) AS moved, (SELECT count(*) FROM woken) AS woken;

-- name: job_cancel_many
-- Waiting jobs become cancelled (an operator's cancel: no attempt's error, so no history
-- entry); active ones get cancel_requested, and their worker is told at once.
WITH t AS (
    SELECT coalesce(%(now)s::float8, extract(epoch FROM now())::float8) AS now
),
ids AS (
    SELECT DISTINCT id FROM unnest(%(ids)b::text[]) AS i(id)
),
cur AS (
    SELECT j.id, j.state, j.error, j.finished_at FROM {schema}.conveyor_job j
    WHERE j.id = ANY(%(ids)b::text[])
    FOR UPDATE
),
waiting AS (
    UPDATE {schema}.conveyor_job j
    SET state = 'cancelled', finished_at = t.now, error = 'cancelled', result = NULL,
        lease_expires_at = NULL, worker_id = NULL, cancel_requested = false, isolated = false
    FROM cur, t
    WHERE j.id = ANY(%(ids)b::text[]) AND j.id = cur.id
      AND cur.state IN ('scheduled', 'queued', 'retrying')
    RETURNING j.id, j.queue, j.group_key, cur.state
),
-- The records of the groups whose queued jobs were cancelled, locked in order, then counted.
moves AS MATERIALIZED (
    SELECT m.queue, m.group_key AS key, sum(-(m.state = 'queued')::int)::int AS queued_by,
           sum(0)::int AS active_by
    FROM waiting m WHERE m.group_key IS NOT NULL
    GROUP BY m.queue, m.group_key
    ORDER BY m.queue, m.group_key
),
held AS MATERIALIZED (
    SELECT m.*, g.queued, g.active, g.concurrency, g.turn FROM moves m CROSS JOIN LATERAL (
        SELECT g.queued, g.active, g.concurrency, g.turn FROM {schema}.conveyor_group g
        WHERE g.queue = m.queue AND g.key = m.key
        FOR UPDATE
    ) g
),
counted AS (
    UPDATE {schema}.conveyor_group g
    SET queued = greatest(g.queued + h.queued_by, 0), active = greatest(g.active + h.active_by, 0)
    FROM held h
    WHERE g.queue = h.queue AND g.key = h.key
),
active AS (
    UPDATE {schema}.conveyor_job j SET cancel_requested = true
    FROM cur WHERE j.id = ANY(%(ids)b::text[]) AND j.id = cur.id AND cur.state = 'active'
    RETURNING j.id, j.worker_id
),
told AS (
    SELECT pg_notify(%(channel)s, 'c:' || json_build_array(worker_id, id)::text)
    FROM active WHERE worker_id IS NOT NULL
)
SELECT cur.id, cur.state, cur.error, cur.finished_at, t.now,
       (SELECT count(*) FROM told) AS told, (SELECT count(*) FROM waiting) AS cancelled,
       (SELECT count(*) FROM held) AS groups
FROM cur, t;

-- name: job_retry_many
-- Retried jobs get new sequence numbers in the order the ids were given.
WITH t AS (
    SELECT coalesce(%(now)s::float8, extract(epoch FROM now())::float8) AS now
),
ids AS (
    SELECT id, min(ord) AS ord
    FROM unnest(%(ids)b::text[]) WITH ORDINALITY AS i(id, ord)
    GROUP BY id
),
cur AS (
    SELECT j.id, j.state FROM {schema}.conveyor_job j
    WHERE j.id = ANY(%(ids)b::text[])
    FOR UPDATE
),

numbered AS (
    SELECT o.id, nextval('{schema}.conveyor_job_seq') AS seq
    FROM (
        SELECT cur.id FROM cur JOIN ids ON ids.id = cur.id
        WHERE cur.state IN ('failed', 'cancelled')
        ORDER BY ids.ord
    ) o
),
retried AS (
    UPDATE {schema}.conveyor_job j
    SET state = 'queued', max_attempts = j.attempt + 1, run_at = t.now, finished_at = NULL,
        expires_at = NULL, stalls = 0, cancel_requested = false, seq = numbered.seq
    FROM numbered, t
    WHERE j.id = ANY(%(ids)b::text[]) AND j.id = numbered.id
    RETURNING j.id, j.queue, j.name, j.group_key, j.group_concurrency, j.group_rate_count,
              j.group_rate_per
),
-- The groups of the jobs made queued count them, in order (a record deleted while the group
-- was idle is made anew from its job, its turn now).
placed AS (
    INSERT INTO {schema}.conveyor_group AS g (
        queue, key, name, concurrency, rate_count, rate_per, queued, turn, quiet_at
    )
    SELECT m.queue, m.group_key, min(m.name), min(coalesce(m.group_concurrency, 0)),
           min(coalesce(m.group_rate_count, 0)), min(coalesce(m.group_rate_per, 0)), count(*),
           t.now, t.now
    FROM retried m, t WHERE m.group_key IS NOT NULL
    GROUP BY m.queue, m.group_key, t.now
    ORDER BY m.queue, m.group_key
    ON CONFLICT (queue, key) DO UPDATE SET queued = g.queued + excluded.queued
),
woken AS (
    SELECT pg_notify(%(channel)s, 'q:' || queue) FROM (SELECT DISTINCT queue FROM retried) q
)
SELECT cur.id, cur.state, (SELECT count(*) FROM woken) AS woken FROM cur;

-- name: job_purge
-- The records of the groups of purged queued or active jobs are locked in order, then counted.
WITH gone AS (
    DELETE FROM {schema}.conveyor_job
    WHERE state = ANY(%(states)b::text[])
      AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
      AND (%(finished_before)s::float8 IS NULL OR finished_at < %(finished_before)s::float8)
    RETURNING queue, group_key, state
),
moves AS MATERIALIZED (
    SELECT m.queue, m.group_key AS key, sum(-(m.state = 'queued')::int)::int AS queued_by,
           sum(-(m.state = 'active')::int)::int AS active_by
    FROM gone m WHERE m.group_key IS NOT NULL
    GROUP BY m.queue, m.group_key
    ORDER BY m.queue, m.group_key
),
held AS MATERIALIZED (
    SELECT m.*, g.queued, g.active, g.concurrency, g.turn FROM moves m CROSS JOIN LATERAL (
        SELECT g.queued, g.active, g.concurrency, g.turn FROM {schema}.conveyor_group g
        WHERE g.queue = m.queue AND g.key = m.key
        FOR UPDATE
    ) g
),
counted AS (
    UPDATE {schema}.conveyor_group g
    SET queued = greatest(g.queued + h.queued_by, 0), active = greatest(g.active + h.active_by, 0)
    FROM held h
    WHERE g.queue = h.queue AND g.key = h.key
)
SELECT (SELECT count(*) FROM gone) AS purged, (SELECT count(*) FROM held) AS held;

-- name: job_prune_finished
-- Failed or cancelled jobs older than %(cutoff)s, oldest first, at most %(limit)s.
DELETE FROM {schema}.conveyor_job
WHERE id IN (
    SELECT id FROM {schema}.conveyor_job
    WHERE state = %(state)s::text AND finished_at < %(cutoff)s::float8
    ORDER BY finished_at, seq
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
);

-- name: job_prune_finished__expired
-- Finished jobs whose own retention expired by %(now)s, earliest first, at most %(limit)s
-- (only finished jobs have an expiry: a retry clears it).
DELETE FROM {schema}.conveyor_job
WHERE id IN (
    SELECT id FROM {schema}.conveyor_job
    WHERE expires_at IS NOT NULL AND expires_at <= %(now)s::float8
    ORDER BY expires_at, seq
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
);

-- Completed jobs older than %(cutoff)s, oldest first, at most %(limit)s: read queue by queue.
-- name: job_prune_finished__completed
DELETE FROM {schema}.conveyor_job
WHERE id IN (
    SELECT old.id
    FROM {schema}.conveyor_queue q CROSS JOIN LATERAL (
        SELECT o.id, o.finished_at, o.seq FROM {schema}.conveyor_job o
        WHERE o.queue = q.name AND o.state = 'completed' AND o.finished_at < %(cutoff)s::float8
        ORDER BY o.finished_at, o.seq
        LIMIT %(limit)s
    ) old
    ORDER BY old.finished_at, old.seq
    LIMIT %(limit)s
);

-- name: job_prune_finished__trim_completed
-- Completed jobs beyond the newest %(keep)s of each of %(queues)s (NULL: every queue), oldest
-- first, at most %(limit)s: the ones older than the keep-th newest, read in index order.
DELETE FROM {schema}.conveyor_job
WHERE id IN (
    SELECT old.id
    FROM unnest(coalesce(
        %(queues)b::text[], ARRAY(SELECT name FROM {schema}.conveyor_queue)
    )) AS q(name)
    CROSS JOIN LATERAL (
        SELECT o.id, o.finished_at, o.seq FROM {schema}.conveyor_job o
        WHERE o.queue = q.name AND o.state = 'completed'
          AND (%(keep)s::int = 0 OR (o.finished_at, o.seq) < (
              SELECT b.finished_at, b.seq FROM {schema}.conveyor_job b
              WHERE b.queue = q.name AND b.state = 'completed'
              ORDER BY b.finished_at DESC, b.seq DESC
              OFFSET greatest(%(keep)s::int - 1, 0) LIMIT 1))
        ORDER BY o.finished_at, o.seq
        LIMIT %(limit)s
    ) old
    ORDER BY old.finished_at, old.seq
    LIMIT %(limit)s
);

-- name: job_progress_many
-- Each job's latest progress, fenced like a finish: written only while the job is active with
-- the token. One row per update, in order: whether it was written, and whether the job exists.
WITH t AS (
    SELECT coalesce(%(now)s::float8, extract(epoch FROM now())::float8) AS now
),
u AS (
    SELECT * FROM unnest(%(ids)b::text[], %(tokens)b::text[], %(fractions)b::float8[],
                         %(messages)b::text[])
        WITH ORDINALITY AS u(id, token, fraction, message, ord)
),
done AS (
    UPDATE {schema}.conveyor_job j
    SET progress = u.fraction, progress_message = u.message, progress_at = t.now
    FROM u, t
    WHERE j.id = ANY(%(ids)b::text[]) AND j.id = u.id AND (j.state = 'active') IS TRUE
      AND j.lease_token = u.token
    RETURNING j.id, u.token
)
SELECT u.id, done.id IS NOT NULL AS written,
       done.id IS NOT NULL OR EXISTS (
           SELECT 1 FROM {schema}.conveyor_job c WHERE c.id = u.id
       ) AS found
FROM u
LEFT JOIN done ON done.id = u.id AND done.token = u.token
ORDER BY u.ord;

-- name: job_get_many
SELECT * FROM {schema}.conveyor_job WHERE id = ANY(%(ids)b::text[]);

-- name: job_list
-- One keyset range of the list index per (queue, state), newest first, merged.
SELECT r.* FROM unnest(
    CASE WHEN %(queue)s::text IS NULL
        THEN ARRAY(SELECT name FROM {schema}.conveyor_queue ORDER BY name)
        ELSE ARRAY[%(queue)s::text] END
) AS q(name)
CROSS JOIN unnest(%(states)b::text[]) AS s(state)
CROSS JOIN LATERAL (
    SELECT * FROM {schema}.conveyor_job j
    WHERE j.queue = q.name AND j.state = s.state
      AND (%(name)s::text IS NULL OR j.name = %(name)s::text)
      AND j.seq < coalesce(%(before_seq)s::bigint, 9223372036854775807)
    ORDER BY j.seq DESC
    LIMIT %(limit)s
) r
ORDER BY r.seq DESC
LIMIT %(limit)s;

-- name: job_count_by_state
SELECT state, count(*) AS n FROM {schema}.conveyor_job
WHERE %(queue)s::text IS NULL OR queue = %(queue)s::text
GROUP BY state;

-- name: job_delete_many
-- Finished jobs (completed, failed, cancelled) are deleted, with the dedup keys they hold (the
-- foreign key cascades), as pruning deletes them; no group counts them (groups count queued
-- and active jobs only). The rows are locked first, so the states reported are those the
-- delete decided on: a job retried meanwhile is found queued and left alone, one deleted
-- meanwhile is not found.
WITH cur AS MATERIALIZED (
    SELECT j.id, j.state FROM {schema}.conveyor_job j
    WHERE j.id = ANY(%(ids)b::text[])
    FOR UPDATE
),
gone AS (
    DELETE FROM {schema}.conveyor_job j
    USING cur
    WHERE j.id = ANY(%(ids)b::text[]) AND j.id = cur.id
      AND cur.state IN ('completed', 'failed', 'cancelled')
    RETURNING j.id
)
SELECT cur.id, cur.state, (SELECT count(*) FROM gone) AS deleted FROM cur;

-- name: stats_add
-- Adds the samples to their (queue, minute) buckets: summed per bucket first (an upsert may
-- touch a row once per statement) and written in key order (two adds wait for each other
-- instead of deadlocking). Buckets older than %(keep)s minutes before now go: those of the
-- samples are not written, and at most %(limit)s stored ones are deleted, oldest first,
-- skipping any another add holds (the next add takes them). The two touch disjoint rows.
WITH t AS (
    SELECT floor(coalesce(%(now)s::float8, extract(epoch FROM now())::float8))::bigint / 60
           - %(keep)s::bigint AS oldest
),
added AS (
    INSERT INTO {schema}.conveyor_stats AS s (queue, minute, completed, retried, failed)
    SELECT a.queue, a.minute, sum(a.completed)::bigint, sum(a.retried)::bigint,
           sum(a.failed)::bigint
    FROM unnest(%(queues)s::text[], %(minutes)s::bigint[], %(completed)s::bigint[],
                %(retried)s::bigint[], %(failed)s::bigint[])
         AS a(queue, minute, completed, retried, failed)
    CROSS JOIN t
    WHERE a.minute >= t.oldest
    GROUP BY a.queue, a.minute
    ORDER BY a.queue, a.minute
    ON CONFLICT (queue, minute) DO UPDATE SET
        completed = s.completed + excluded.completed,
        retried = s.retried + excluded.retried,
        failed = s.failed + excluded.failed
    RETURNING 1
),
dropped AS (
    DELETE FROM {schema}.conveyor_stats
    WHERE (queue, minute) IN (
        SELECT o.queue, o.minute FROM {schema}.conveyor_stats o CROSS JOIN t
        WHERE o.minute < t.oldest
        ORDER BY o.minute
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    )
    RETURNING 1
)
SELECT (SELECT count(*) FROM added) AS added, (SELECT count(*) FROM dropped) AS dropped;

-- name: stats_read
-- The newest %(keep)s buckets from minute %(since)s on of each of %(queues)s (NULL: every queue
-- with buckets, found by skipping through the primary key a queue at a time), each queue's a
-- range of the primary key; in (queue, minute) order, queues by code point as Python sorts.
WITH RECURSIVE every AS (
    (SELECT s.queue FROM {schema}.conveyor_stats s ORDER BY s.queue LIMIT 1)
    UNION ALL
    SELECT (
        SELECT s.queue FROM {schema}.conveyor_stats s
        WHERE s.queue > every.queue ORDER BY s.queue LIMIT 1
    )
    FROM every WHERE every.queue IS NOT NULL
)
SELECT b.queue, b.minute, b.completed, b.retried, b.failed
FROM unnest(coalesce(
    %(queues)s::text[], ARRAY(SELECT e.queue FROM every e WHERE e.queue IS NOT NULL)
)) AS q(name)
CROSS JOIN LATERAL (
    SELECT s.queue, s.minute, s.completed, s.retried, s.failed
    FROM {schema}.conveyor_stats s
    WHERE s.queue = q.name AND s.minute >= %(since)s::bigint
    ORDER BY s.minute DESC
    LIMIT %(keep)s
) b
ORDER BY b.queue COLLATE "C", b.minute;

-- name: queue_list
SELECT q.name, q.paused, c.state, coalesce(c.n, 0) AS n
FROM {schema}.conveyor_queue q
LEFT JOIN (
    SELECT queue, state, count(*) AS n FROM {schema}.conveyor_job GROUP BY queue, state
) c ON c.queue = q.name
ORDER BY q.name;

-- name: queue_pause
INSERT INTO {schema}.conveyor_queue (name, paused) VALUES (%(queue)s, true)
ON CONFLICT (name) DO UPDATE SET paused = true;

-- name: queue_resume
WITH resumed AS (
    UPDATE {schema}.conveyor_queue SET paused = false WHERE name = %(queue)s RETURNING name
)
SELECT pg_notify(%(channel)s, 'q:' || name) FROM resumed;

-- name: worker_heartbeat
WITH t AS (
    SELECT coalesce(%(now)s::float8, extract(epoch FROM now())::float8) AS now
),
pruned AS (
    DELETE FROM {schema}.conveyor_worker w USING t
    WHERE w.expires_at <= t.now AND w.id <> %(id)s
)
INSERT INTO {schema}.conveyor_worker AS w (
    id, hostname, pid, queues, names, concurrency, started_at, last_seen_at, running,
    processed, expires_at
)
SELECT %(id)s, %(hostname)s, %(pid)s, %(queues)s::jsonb, %(names)s::jsonb, %(concurrency)s,
       %(started_at)s, t.now, %(running)s, %(processed)s, t.now + %(ttl)s::float8
FROM t
ON CONFLICT (id) DO UPDATE SET
    hostname = excluded.hostname,
    pid = excluded.pid,
    queues = excluded.queues,
    names = excluded.names,
    concurrency = excluded.concurrency,
    started_at = excluded.started_at,
    last_seen_at = excluded.last_seen_at,
    running = excluded.running,
    processed = excluded.processed,
    expires_at = excluded.expires_at;

-- name: worker_deregister
DELETE FROM {schema}.conveyor_worker WHERE id = %(id)s;

-- Ties on started_at keep first-registration order, as the reference does.
-- name: worker_list
SELECT * FROM {schema}.conveyor_worker
WHERE expires_at > coalesce(%(now)s::float8, extract(epoch FROM now())::float8)
ORDER BY started_at, registered;

-- name: route_register
INSERT INTO {schema}.conveyor_route (name, queue, updated_at)
SELECT name, queue, extract(epoch FROM now())::float8
FROM unnest(%(names)b::text[], %(queues)b::text[]) AS r(name, queue)
ON CONFLICT (name) DO UPDATE SET queue = excluded.queue, updated_at = excluded.updated_at;

-- name: route_list
SELECT name, queue FROM {schema}.conveyor_route ORDER BY name;

-- Takes the lease when free, expired or already ours; returns a row only on success.
-- name: leader_acquire
WITH t AS (
    SELECT coalesce(%(now)s::float8, extract(epoch FROM now())::float8) AS now
)
INSERT INTO {schema}.conveyor_leader AS l (name, holder, expires_at)
SELECT %(name)s, %(holder)s, t.now + %(ttl)s::float8 FROM t
ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
WHERE l.holder = excluded.holder
   OR l.expires_at <= coalesce(%(now)s::float8, extract(epoch FROM now())::float8)
RETURNING holder;

-- name: leader_release
DELETE FROM {schema}.conveyor_leader WHERE name = %(name)s AND holder = %(holder)s;

-- name: meta_instance
SELECT value FROM {schema}.conveyor_meta WHERE key = 'instance';

-- Whether jobs wait in one of %(queues)s: asked once, when a driver starts to listen.
-- name: listen__runnable
-- Plain jobs queued, or a group eligible now (each a first entry of an index range).
SELECT EXISTS (
    SELECT 1 FROM unnest(%(queues)b::text[]) AS q(name) CROSS JOIN LATERAL (
        SELECT 1 FROM {schema}.conveyor_job j
        WHERE j.queue = q.name AND j.state = 'queued' AND j.group_key IS NULL
        ORDER BY j.priority, j.run_at, j.seq
        LIMIT 1
    ) x
) OR EXISTS (
    SELECT 1 FROM unnest(%(queues)b::text[]) AS q(name) CROSS JOIN LATERAL (
        SELECT 1 FROM {schema}.conveyor_group g
        WHERE g.queue = q.name AND g.queued > 0
          AND (g.concurrency = 0 OR g.active < g.concurrency)
          AND g.turn <= extract(epoch FROM now())::float8
        ORDER BY g.turn
        LIMIT 1
    ) x
) AS runnable;

-- The running jobs of a worker someone asked to cancel: read when it starts listening for
-- cancels (what was notified before could not be heard). The active index is by worker.
-- name: cancel_listen__requested
SELECT id FROM {schema}.conveyor_job
WHERE state = 'active' AND worker_id = %(worker_id)s AND cancel_requested;

-- Dedup keys (see migrations/0003_dedup.sql): an insert with a key runs these in one
-- transaction, after job_insert_many__dedup_lock, so nobody else decides about the key between
-- the read and the write. (Seed 7 keeps these locks apart from the migrations' lock, seed 0;
-- another store of the database with the same queue and key only waits its turn.)
-- Every key of a batch is locked first, in one order (by lock id), so two batches whose keys
-- overlap in different orders wait for each other instead of deadlocking.
-- name: job_insert_many__dedup_lock
SELECT pg_advisory_xact_lock(locks.id)
FROM (
    SELECT DISTINCT hashtextextended(k.queue || chr(10) || k.key, 7) AS id
    FROM unnest(%(queues)s::text[], %(keys)s::text[]) AS k(queue, key)
    ORDER BY id
    OFFSET 0
) AS locks;

-- The clock, and the key's holder job as it is now (no holder columns when the key has no
-- record).
-- name: job_insert_many__dedup_holder
WITH t AS (
    SELECT coalesce(%(now)s::float8, extract(epoch FROM clock_timestamp())::float8) AS now
)
SELECT t.now, d.job_id, d.mode, d.expires_at, j.name, j.state, j.started_at, j.run_at
FROM t
LEFT JOIN {schema}.conveyor_dedup d ON d.queue = %(queue)s::text AND d.key = %(key)s::text
LEFT JOIN {schema}.conveyor_job j ON j.id = d.job_id;

-- name: job_insert_many__dedup_take
INSERT INTO {schema}.conveyor_dedup (queue, key, job_id, mode, expires_at)
VALUES (%(queue)s::text, %(key)s::text, %(id)s::text, %(mode)s::text, %(expires_at)s::float8)
ON CONFLICT (queue, key) DO UPDATE SET
    job_id = excluded.job_id, mode = excluded.mode, expires_at = excluded.expires_at;

-- A debounce: the waiting holder takes the new payload, headers and run time, if it still
-- waits for a run time to come (else the key is free after all), and the new job's group: it
-- joins that group as an insert does (it waits for its run time, so no group counts it yet).
-- name: job_insert_many__dedup_replace
WITH replaced AS (
    UPDATE {schema}.conveyor_job
    SET payload = %(payload)s::bytea, headers = %(headers)s::text, run_at = %(run_at)s::float8,
        group_key = %(group_key)s::text, group_concurrency = %(group_concurrency)s::int,
        group_rate_count = %(group_rate_count)s::int, group_rate_per = %(group_rate_per)s::float8
    WHERE id = %(id)s::text AND state = 'scheduled' AND started_at IS NULL
      AND run_at > %(now)s::float8
    RETURNING id, queue, name
),
joined AS (
    INSERT INTO {schema}.conveyor_group AS g (
        queue, key, name, concurrency, rate_count, rate_per, turn, quiet_at
    )
    SELECT r.queue, %(group_key)s::text, r.name, %(group_concurrency)s::int,
           %(group_rate_count)s::int, %(group_rate_per)s::float8, %(now)s::float8,
           %(now)s::float8
    FROM replaced r WHERE %(group_key)s::text IS NOT NULL
    ON CONFLICT (queue, key) DO UPDATE SET
        name = excluded.name, concurrency = excluded.concurrency,
        rate_count = excluded.rate_count, rate_per = excluded.rate_per,
        turn = CASE WHEN g.served_at IS NULL THEN g.turn ELSE greatest(
            g.served_at, g.blocked_until,
            CASE WHEN excluded.rate_count > 0 AND cardinality(g.starts) >= excluded.rate_count
                THEN g.starts[cardinality(g.starts) - excluded.rate_count + 1]
                     + excluded.rate_per END) END
)
SELECT id FROM replaced;
-- The rows of these rate-limited queues (created when missing), locked until the fetch's
-- transaction ends, in name order (so two fetches of the same queues cannot deadlock), with the
-- time the lock was taken: what the fetch that follows runs at.
-- name: rate_limit__lock
INSERT INTO {schema}.conveyor_rate_limit AS r (queue)
SELECT q.queue FROM unnest(%(queues)s::text[]) AS q(queue) ORDER BY q.queue
ON CONFLICT (queue) DO UPDATE SET queue = r.queue
RETURNING r.queue, r.starts, r.blocked_until,
    coalesce(%(now)s::float8, extract(epoch FROM clock_timestamp())::float8) AS now;

-- The log of a queue after %(started)s starts at %(at)s: appended, then cut to the last
-- %(count)s entries.
-- name: rate_limit__log
UPDATE {schema}.conveyor_rate_limit r
SET starts = (r.starts || array_fill(%(at)s::float8, ARRAY[%(started)s::int]))[
    greatest(1, cardinality(r.starts) + %(started)s::int - %(count)s::int + 1):]
WHERE r.queue = %(queue)s::text;

-- name: rate_limit_block
INSERT INTO {schema}.conveyor_rate_limit AS r (queue, blocked_until)
VALUES (
    %(queue)s::text,
    coalesce(%(now)s::float8, extract(epoch FROM now())::float8) + %(seconds)s::float8
)
ON CONFLICT (queue) DO UPDATE
SET blocked_until = greatest(r.blocked_until, excluded.blocked_until);

-- name: rate_limit_wait
SELECT r.queue, r.starts, r.blocked_until,
    coalesce(%(now)s::float8, extract(epoch FROM now())::float8) AS now
FROM {schema}.conveyor_rate_limit r
WHERE r.queue = ANY(%(queues)s::text[]);
