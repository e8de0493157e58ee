-- Statements of groups (see migrations/0006_groups.sql and _groups.py), in the format of
-- queries.sql. Every statement that moves grouped jobs into or out of queued or active updates
-- their groups' counts itself, once per group (here, and in job_finish_many, job_rescue_many,
-- job_cancel_many, job_retry_many, job_purge and job_promote_due of queries.sql, and cron_fire).
-- Each takes the job rows first, then the group records in (queue, key) order, so two
-- statements that share groups wait for each other instead of deadlocking; the fetch takes
-- group records, then jobs, with SKIP LOCKED, and never waits.

-- name: job_insert_many__grouped
-- job_insert_many of a batch that holds grouped jobs: as job_insert_many, then the groups of
-- the jobs inserted are created (turn: the insert's now) or updated, in (queue, key) order: each
-- counts its queued jobs and takes the limits of its last job inserted.
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
           i.group_key, i.group_concurrency, i.group_rate_count, i.group_rate_per, i.headers
    FROM unnest(%(ids)b::text[], %(queues)b::text[], %(names)b::text[], %(payloads)b::bytea[],
                %(priorities)b::int[], %(max_attempts)b::int[], %(run_ats)b::float8[],
                %(delays)b::float8[], %(keep_completeds)b::float8[], %(keep_faileds)b::float8[],
                %(group_keys)b::text[], %(group_concurrencies)b::int[],
                %(group_rate_counts)b::int[], %(group_rate_pers)b::float8[], %(headers)b::text[])
         WITH ORDINALITY AS i(id, queue, name, payload, priority, max_attempts, run_at, delay,
                              keep_completed, keep_failed, group_key, group_concurrency,
                              group_rate_count, group_rate_per, headers, ord),
         t, guard
    WHERE guard.ok
),
inserted AS (
    INSERT INTO {schema}.conveyor_job (
        id, queue, name, payload, state, priority, max_attempts, run_at, enqueued_at, seq,
        keep_completed, keep_failed, group_key, group_concurrency, group_rate_count,
        group_rate_per, headers
    )
    SELECT id, queue, name, payload,
           CASE WHEN run_at > now THEN 'scheduled' ELSE 'queued' END,
           priority, max_attempts, run_at, now, nextval('{schema}.conveyor_job_seq'),
           keep_completed, keep_failed, group_key, group_concurrency, group_rate_count,
           group_rate_per, headers
    FROM (SELECT * FROM input ORDER BY ord) ordered
    ON CONFLICT (id) DO NOTHING
    RETURNING id, queue, state, name, seq, enqueued_at, group_key, group_concurrency,
              group_rate_count, group_rate_per
),
joined AS (
    INSERT INTO {schema}.conveyor_group AS g (
        queue, key, name, concurrency, rate_count, rate_per, queued, turn, quiet_at
    )
    SELECT i.queue, i.group_key, (array_agg(i.name ORDER BY i.seq DESC))[1],
           (array_agg(coalesce(i.group_concurrency, 0) ORDER BY i.seq DESC))[1],
           (array_agg(coalesce(i.group_rate_count, 0) ORDER BY i.seq DESC))[1],
           (array_agg(coalesce(i.group_rate_per, 0) ORDER BY i.seq DESC))[1],
           count(*) FILTER (WHERE i.state = 'queued'), min(i.enqueued_at), min(i.enqueued_at)
    FROM inserted i WHERE i.group_key IS NOT NULL
    GROUP BY i.queue, i.group_key
    ORDER BY i.queue, i.group_key
    ON CONFLICT (queue, key) DO UPDATE SET
        queued = g.queued + excluded.queued, name = excluded.name,
        concurrency = excluded.concurrency, rate_count = excluded.rate_count,
        rate_per = excluded.rate_per,
        -- The turn under the new limits (a rate made looser frees the group at once).
        turn = CASE WHEN g.served_at IS NULL THEN g.turn ELSE greatest(
            g.served_at, g.blocked_until,
            CASE WHEN excluded.rate_count > 0 AND cardinality(g.starts) >= excluded.rate_count
                THEN g.starts[cardinality(g.starts) - excluded.rate_count + 1]
                     + excluded.rate_per END) END
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

-- The records of a batch's groups, created (turn: now) or locked in order, before the
-- statements of an insert with dedup keys insert its jobs one by one.
-- name: job_insert_many__group_lock
INSERT INTO {schema}.conveyor_group AS g (
    queue, key, name, concurrency, rate_count, rate_per, turn, quiet_at
)
SELECT DISTINCT ON (k.queue, k.key) k.queue, k.key, k.name, k.concurrency, k.rate_count,
       k.rate_per, t.now, t.now
FROM unnest(%(queues)s::text[], %(keys)s::text[], %(names)s::text[], %(concurrencies)s::int[],
            %(rate_counts)s::int[], %(rate_pers)s::float8[])
         AS k(queue, key, name, concurrency, rate_count, rate_per),
     (SELECT coalesce(%(now)s::float8, extract(epoch FROM clock_timestamp())::float8) AS now) t
ORDER BY k.queue, k.key
ON CONFLICT (queue, key) DO UPDATE SET queued = g.queued WHERE false;

-- The grouped jobs of the served queues that are due become queued (all of them, as a fetch
-- promotes); their groups count them, in (queue, key) order (a record deleted while the group
-- was idle is made anew from its job, its turn now).
-- name: job_fetch__group_promote
WITH t AS (
    SELECT %(now)s::float8 AS now
),
served AS (
    SELECT q.name FROM unnest(%(queues)s::text[]) AS q(name)
    WHERE NOT EXISTS (
        SELECT 1 FROM {schema}.conveyor_queue p WHERE p.name = q.name AND p.paused
    )
),
due AS (
    SELECT d.id FROM served CROSS JOIN t CROSS JOIN LATERAL (
        SELECT j.id FROM {schema}.conveyor_job j
        WHERE j.queue = served.name AND j.state IN ('scheduled', 'retrying')
          AND j.group_key IS NOT NULL AND j.run_at <= t.now
        FOR UPDATE SKIP LOCKED
    ) d
),
moved AS (
    UPDATE {schema}.conveyor_job j SET state = 'queued'
    WHERE j.id = ANY(ARRAY(SELECT id FROM due))
    RETURNING j.queue, j.name, j.group_key, j.group_concurrency, j.group_rate_count,
              j.group_rate_per
),
placed AS (
    INSERT INTO {schema}.conveyor_group AS g (
        queue, key, name, concurrency, rate_count, rate_per, queued, turn, quiet_at
    )
    SELECT m.queue, m.group_key, min(m.name), min(coalesce(m.group_concurrency, 0)),
           min(coalesce(m.group_rate_count, 0)), min(coalesce(m.group_rate_per, 0)), count(*),
           t.now, t.now
    FROM moved m, t
    GROUP BY m.queue, m.group_key, t.now
    ORDER BY m.queue, m.group_key
    ON CONFLICT (queue, key) DO UPDATE SET queued = g.queued + excluded.queued
)
SELECT count(*) AS moved FROM moved;

-- name: job_fetch__grouped
-- Serve the eligible groups of the served queues, round-robin: at most %(limit)s jobs, and no
-- more of a queue's than its %(caps)s entry. The first eligible groups of each queue in turn
-- order are locked (SKIP LOCKED: a group another fetch serves waits for the next one); each may
-- start as many jobs as it has queued, its concurrency has room for and its rate log allows
-- (rates.allowance); the rounds (round, turn, key) pick which groups start how many, before a
-- job is read, so a fetch reads no more jobs than it leases, each group's first in run order.
-- The groups served take their turn at now (or when their rate window frees) and log their
-- starts, at now or later (rates.logged), and count the jobs leased as active.
WITH t AS (
    SELECT %(now)s::float8 AS now
),
served AS (
    SELECT q.name, q.cap FROM unnest(%(queues)s::text[], %(caps)s::int[]) AS q(name, cap)
    WHERE q.cap > 0 AND NOT EXISTS (
        SELECT 1 FROM {schema}.conveyor_queue p WHERE p.name = q.name AND p.paused
    )
),
candidates AS MATERIALIZED (
    SELECT c.* FROM served CROSS JOIN t CROSS JOIN LATERAL (
        SELECT g.queue, g.key, g.turn, g.queued, g.active, g.concurrency, g.rate_count,
               g.rate_per, g.starts, g.blocked_until, g.quiet_at,
               g.starts[greatest(1, cardinality(g.starts) - g.rate_count + 1):] AS recent
        FROM {schema}.conveyor_group g
        WHERE g.queue = served.name AND g.queued > 0
          AND (g.concurrency = 0 OR g.active < g.concurrency) AND g.turn <= t.now
        ORDER BY g.turn, g.key
        LIMIT least(%(limit)s, served.cap)
        FOR UPDATE SKIP LOCKED
    ) c
),
sized AS (
    SELECT c.queue, c.key, c.turn, least(
        c.queued,
        %(limit)s,
        CASE WHEN c.concurrency = 0 THEN %(limit)s
            ELSE greatest(c.concurrency - c.active, 0) END,
        CASE WHEN c.rate_count = 0 THEN %(limit)s
            ELSE c.rate_count - cardinality(c.recent) + coalesce((
                SELECT min(u.i) - 1 FROM unnest(c.recent) WITH ORDINALITY AS u(at, i)
                WHERE u.at + c.rate_per > t.now
            ), cardinality(c.recent)) END
    ) AS room
    FROM candidates c, t
),
slots AS (
    SELECT s.queue, s.key, s.turn, r.round,
           row_number() OVER (PARTITION BY s.queue ORDER BY r.round, s.turn, s.key) AS place
    FROM sized s CROSS JOIN LATERAL generate_series(1, s.room) AS r(round)
),
taken AS MATERIALIZED (
    SELECT p.queue, p.key, p.turn, count(*)::int AS n FROM (
        SELECT sl.queue, sl.key, sl.turn FROM slots sl JOIN served ON served.name = sl.queue
        WHERE sl.place <= served.cap
        ORDER BY sl.round, sl.turn, sl.key, sl.queue
        LIMIT %(limit)s
    ) p
    GROUP BY p.queue, p.key, p.turn
),
jobs AS MATERIALIZED (
    SELECT x.id, taken.queue, taken.key, taken.turn, row_number() OVER (
               PARTITION BY taken.queue, taken.key ORDER BY x.priority, x.run_at, x.seq
           ) AS round
    FROM taken CROSS JOIN LATERAL (
        SELECT j.id, j.priority, j.run_at, j.seq FROM {schema}.conveyor_job j
        WHERE j.queue = taken.queue AND j.group_key = taken.key AND j.state = 'queued'
          AND j.group_key IS NOT NULL
        ORDER BY j.priority, j.run_at, j.seq
        LIMIT taken.n
        FOR UPDATE SKIP LOCKED
    ) x
),
started AS (
    SELECT jobs.queue, jobs.key, count(*)::int AS n FROM jobs GROUP BY jobs.queue, jobs.key
),
logs AS (
    -- From the locked versions (candidates), not the statement's snapshot.
    SELECT c.queue, c.key, c.rate_count, c.rate_per, c.blocked_until, c.quiet_at, s.n,
           CASE WHEN c.rate_count = 0 THEN c.starts
               ELSE (c.starts || array_fill(
                        greatest(t.now, c.starts[cardinality(c.starts)]), ARRAY[s.n]))[
                    greatest(1, cardinality(c.starts) + s.n - c.rate_count + 1):] END AS starts
    FROM started s
    JOIN candidates c ON c.queue = s.queue AND c.key = s.key
    CROSS JOIN t
),
served_groups AS (
    UPDATE {schema}.conveyor_group g
    SET starts = l.starts,
        served_at = t.now,
        queued = greatest(g.queued - l.n, 0),
        active = g.active + l.n,
        turn = greatest(
            t.now, l.blocked_until,
            CASE WHEN l.rate_count > 0 AND cardinality(l.starts) >= l.rate_count
                THEN l.starts[1] + l.rate_per END),
        quiet_at = greatest(
            l.quiet_at, t.now, l.starts[cardinality(l.starts)] + l.rate_per, l.blocked_until)
    FROM logs l, t
    WHERE g.queue = l.queue AND g.key = l.key
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
    WHERE j.id = ANY(ARRAY(SELECT id FROM jobs))
    RETURNING j.*
)
-- In the order served: round by round, each round's groups in turn order.
SELECT leased.* FROM leased JOIN jobs ON jobs.id = leased.id
ORDER BY jobs.round, jobs.turn, jobs.key, jobs.queue;

-- name: group_block
INSERT INTO {schema}.conveyor_group AS g (queue, key, blocked_until, turn, quiet_at)
SELECT %(queue)s::text, %(key)s::text, b.until, b.until, b.until
FROM (
    SELECT coalesce(%(now)s::float8, extract(epoch FROM now())::float8) + %(seconds)s::float8
        AS until
) b
ON CONFLICT (queue, key) DO UPDATE SET
    blocked_until = greatest(g.blocked_until, excluded.blocked_until),
    turn = greatest(g.turn, excluded.blocked_until),
    quiet_at = greatest(g.quiet_at, excluded.blocked_until);

-- The seconds until the earliest group of %(queues)s (of %(names)s, unless NULL) with queued
-- jobs and room, whose turn is still to come, may start a job: the first entry past now of
-- each queue's range of the eligible index (a paused queue's groups wait for no time).
-- name: group_wait
WITH t AS (
    SELECT coalesce(%(now)s::float8, extract(epoch FROM now())::float8) AS now
)
SELECT min(w.turn) - t.now AS wait
FROM t CROSS JOIN unnest(%(queues)s::text[]) AS q(name) CROSS JOIN LATERAL (
    SELECT g.turn FROM {schema}.conveyor_group g
    WHERE g.queue = q.name AND g.queued > 0
      AND (g.concurrency = 0 OR g.active < g.concurrency) AND g.turn > t.now
      AND (%(names)s::text[] IS NULL OR g.name = ANY(%(names)s::text[]))
    ORDER BY g.turn
    LIMIT 1
) w
WHERE NOT EXISTS (
    SELECT 1 FROM {schema}.conveyor_queue p WHERE p.name = q.name AND p.paused
)
GROUP BY t.now;

-- Records of groups with no queued and no active job whose rate window and block have passed
-- by %(now)s, at most %(limit)s, the longest quiet first. A record another statement holds is
-- left for the next prune.
-- name: job_prune_finished__groups
DELETE FROM {schema}.conveyor_group
WHERE (queue, key) IN (
    SELECT g.queue, g.key FROM {schema}.conveyor_group g
    WHERE g.queued = 0 AND g.active = 0 AND g.quiet_at <= %(now)s::float8
      AND (g.blocked_until IS NULL OR g.blocked_until <= %(now)s::float8)
      AND (g.rate_count = 0 OR cardinality(g.starts) = 0
           OR g.starts[cardinality(g.starts)] + g.rate_per <= %(now)s::float8)
    ORDER BY g.quiet_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
);
