-- Queries of the SQLite backend: one statement per section, named after the driver operation
-- (helper steps are <operation>__<step>). Parameters are named; lists travel as JSON arrays read
-- with json_each so each statement stays static and cached. Times are REAL epoch seconds.

-- name: migration__create_table
CREATE TABLE IF NOT EXISTS conveyor_migration (
    name       TEXT NOT NULL PRIMARY KEY,
    applied_at REAL NOT NULL
);

-- name: migration__applied
SELECT name FROM conveyor_migration ORDER BY name;

-- name: migration__record
INSERT INTO conveyor_migration (name, applied_at) VALUES (:name, :now);

-- Reserves a block of :count sequence numbers; returns the last one of the block. The block
-- starts above both the counter and the largest seq in the table (job_insert_one takes the next
-- seq without advancing the counter; migration 0010 says why).
-- name: sequence__reserve
UPDATE conveyor_sequence
SET value = max(value, coalesce((SELECT max(seq) FROM conveyor_job), 0)) + :count
WHERE name = 'job_seq'
RETURNING value;

-- Returns the id when the job was inserted, nothing when one with its id exists.
-- name: job_insert_many
INSERT INTO conveyor_job (
    id, queue, name, payload, state, priority, attempt, max_attempts, run_at, enqueued_at, seq,
    keep_completed, keep_failed, group_key, group_concurrency, group_rate_count, group_rate_per,
    headers
) VALUES (
    :id, :queue, :name, :payload, :state, :priority, 0, :max_attempts, :run_at, :now, :seq,
    :keep_completed, :keep_failed, :group_key, :group_concurrency, :group_rate_count,
    :group_rate_per, :headers
)
ON CONFLICT (id) DO NOTHING
RETURNING id;

-- A single enqueue as one statement, run without BEGIN (the statement is its own transaction
-- and takes the write lock as it starts, waiting in the busy handler like BEGIN IMMEDIATE): its
-- seq is the next after the table's largest and the counter's, read under that lock. Returns
-- nothing when a job with its id exists; the caller then runs the whole insert plan.
-- name: job_insert_one
INSERT INTO conveyor_job (
    id, queue, name, payload, state, priority, attempt, max_attempts, run_at, enqueued_at, seq,
    keep_completed, keep_failed, group_key, group_concurrency, group_rate_count, group_rate_per,
    headers
) VALUES (
    :id, :queue, :name, :payload, :state, :priority, 0, :max_attempts, :run_at, :now,
    (
        SELECT max(coalesce((SELECT max(seq) FROM conveyor_job), 0), value) + 1
        FROM conveyor_sequence WHERE name = 'job_seq'
    ),
    :keep_completed, :keep_failed, :group_key, :group_concurrency, :group_rate_count,
    :group_rate_per, :headers
)
ON CONFLICT (id) DO NOTHING
RETURNING id;

-- name: job_insert_many__register_queue
INSERT INTO conveyor_queue (name, paused) VALUES (:queue, 0) ON CONFLICT (name) DO NOTHING;

-- An insert on the caller's own connection first reads which file that connection has open
-- (rows of seq, name, file), to refuse one that is not on the queue's database.
-- name: job_insert_many__database_list
PRAGMA database_list;

-- name: job__state
SELECT state FROM conveyor_job WHERE id = :id;

-- A fetch is one write transaction: for each served queue that is not paused, its due
-- scheduled and retrying jobs become queued and its first :limit queued jobs are read in index
-- order; then the overall first :limit of those are leased. The write lock serializes
-- fetchers, so two connections can never lease the same job.
-- name: job_fetch__paused
SELECT name FROM conveyor_queue WHERE paused = 1;

-- name: job_fetch__promote
UPDATE conveyor_job INDEXED BY conveyor_job_due_idx
SET state = 'queued'
WHERE state IN ('scheduled', 'retrying') AND run_at <= :now AND queue = :queue;

-- The state and group terms repeat the ready index's WHERE verbatim, which is what lets SQLite
-- use the partial index; its column order equals the ORDER BY, so no sort happens. Grouped jobs
-- are not in it: they are served by group (see groups.sql).
-- name: job_fetch__candidates
SELECT id, name, priority, run_at, seq FROM conveyor_job INDEXED BY conveyor_job_ready_idx
WHERE queue = :queue AND state = 'queued' AND group_key IS NULL
ORDER BY priority, run_at, seq
LIMIT :limit;

-- A worker that serves only some names first reads the head of the queue as above (a few times
-- :limit rows, filtered in Python); when jobs of other names fill that head, it reads one
-- range per name it serves, and the first jobs of any name old enough for the unknown-name rule.
-- name: job_fetch__candidates_named
SELECT id, name, priority, run_at, seq FROM conveyor_job INDEXED BY conveyor_job_named_idx
WHERE queue = :queue AND name = :name AND state = 'queued' AND group_key IS NULL
ORDER BY priority, run_at, seq
LIMIT :limit;

-- The queued jobs that have been runnable since :unknown_before (jobs no worker that knows
-- their name has come for) are read one priority at a time: within a priority the ready index
-- is in run_at order, so each read is one index range, whatever waits at other priorities.
-- name: job_fetch__next_priority
SELECT priority FROM conveyor_job INDEXED BY conveyor_job_ready_idx
WHERE queue = :queue AND state = 'queued' AND group_key IS NULL AND priority > :after
ORDER BY priority
LIMIT 1;

-- name: job_fetch__candidates_unknown
SELECT id, name, priority, run_at, seq FROM conveyor_job INDEXED BY conveyor_job_ready_idx
WHERE queue = :queue AND state = 'queued' AND group_key IS NULL AND priority = :priority
  AND run_at <= :unknown_before
ORDER BY priority, run_at, seq
LIMIT :limit;

-- What a fetch of :queue may take, read without the write lock (so that an idle worker never
-- takes it to find nothing): a queued plain job, a group whose turn has come, a due scheduled
-- or retrying job; each one probe of the index the fetch itself reads.
-- name: job_fetch__probe
SELECT EXISTS (
    SELECT 1 FROM conveyor_job INDEXED BY conveyor_job_ready_idx
    WHERE queue = :queue AND state = 'queued' AND group_key IS NULL
) AS plain, EXISTS (
    SELECT 1 FROM conveyor_group INDEXED BY conveyor_group_ready_idx
    WHERE queue = :queue AND queued > 0 AND (concurrency = 0 OR active < concurrency)
      AND turn <= :now
) AS grouped, EXISTS (
    SELECT 1 FROM conveyor_job INDEXED BY conveyor_job_due_idx
    WHERE state IN ('scheduled', 'retrying') AND run_at <= :now AND queue = :queue
) AS due;

-- The common fetch in one statement (its own transaction): the first :limit queued plain jobs
-- of a queue that is not paused, leased with tokens that begin with :prefix.
-- name: job_fetch__plain
UPDATE conveyor_job
SET state = 'active',
    attempt = attempt + 1,
    started_at = :now,
    lease_token = :prefix || lower(hex(randomblob(8))),
    lease_expires_at = :expires_at,
    worker_id = :worker_id,
    cancel_requested = 0,
    isolated = 0
WHERE id IN (
    SELECT id FROM conveyor_job INDEXED BY conveyor_job_ready_idx
    WHERE queue = :queue AND state = 'queued' AND group_key IS NULL
    ORDER BY priority, run_at, seq
    LIMIT :limit
) AND NOT EXISTS (SELECT 1 FROM conveyor_queue WHERE name = :queue AND paused = 1);

-- What job_fetch__plain leased, read after its commit: one range of the lease index (no other
-- fetch wrote this lease end with this worker, time and token prefix).
-- name: job_fetch__plain_leased
SELECT * FROM conveyor_job INDEXED BY conveyor_job_lease_idx
WHERE state = 'active' AND lease_expires_at = :expires_at AND worker_id = :worker_id
  AND started_at = :now AND substr(lease_token, 1, 16) = :prefix;

-- Leases the jobs of :tokens (a JSON object, job id to its new lease token) in one statement
-- that returns nothing: the rows are read after the commit, outside the write lock.
-- name: job_fetch
UPDATE conveyor_job
SET state = 'active',
    attempt = attempt + 1,
    started_at = :now,
    lease_token = t.value,
    lease_expires_at = :now + :lease_seconds,
    worker_id = :worker_id,
    cancel_requested = 0,
    isolated = 0
FROM json_each(:tokens) AS t
WHERE conveyor_job.id = t.key;

-- :leases is a JSON array of [id, token, isolated]: one statement that returns nothing, so the
-- write lock is held for it alone; job_extend_leases__held reads the outcome after the commit.
-- INDEXED BY the primary key (here and in job_finish_many__complete_all): with the state term
-- the planner would otherwise walk every active job and scan the batch for each, work that
-- grows with the number of running jobs, under the write lock.
-- name: job_extend_leases
UPDATE conveyor_job INDEXED BY sqlite_autoindex_conveyor_job_1
SET lease_expires_at = :expires_at,
    isolated = max(isolated, json_extract(l.value, '$[2]'))
FROM json_each(:leases) AS l
WHERE conveyor_job.id = json_extract(l.value, '$[0]') AND conveyor_job.state = 'active'
  AND conveyor_job.lease_token = json_extract(l.value, '$[1]');

-- name: job_extend_leases__held
SELECT id, state, lease_token, cancel_requested FROM conveyor_job
WHERE id IN (SELECT value FROM json_each(:ids));

-- Every finish is fenced on (state 'active', lease_token); it keeps the token, so that the same
-- finish sent again finds its work done (job__finished_with). Errors join the history first
-- (job__note_error, fenced the same way, in the same transaction).
-- name: job_finish_many__complete
UPDATE conveyor_job
SET state = 'completed', finished_at = :now, result = :result, error = NULL,
    expires_at = :now + keep_completed,
    lease_expires_at = NULL, worker_id = NULL, cancel_requested = 0, isolated = 0
WHERE id = :id AND state = 'active' AND lease_token = :token
RETURNING queue, state, group_key;

-- Plain completions in one statement: :batch is a JSON array of [id, token, result as text or
-- null], the result cast back to the BLOB the one-job statement above stores. It returns
-- nothing: when it changed fewer rows than it was given, the caller reads why, job by job.
-- name: job_finish_many__complete_all
UPDATE conveyor_job INDEXED BY sqlite_autoindex_conveyor_job_1
SET state = 'completed', finished_at = :now, result = CAST(json_extract(b.value, '$[2]') AS BLOB),
    error = NULL, expires_at = :now + keep_completed,
    lease_expires_at = NULL, worker_id = NULL, cancel_requested = 0, isolated = 0
FROM json_each(:batch) AS b
WHERE conveyor_job.id = json_extract(b.value, '$[0]') AND conveyor_job.state = 'active'
  AND conveyor_job.lease_token = json_extract(b.value, '$[1]');

-- Read outside the write lock before a batch of finishes: the queue and group of each job, and
-- its state and token (a finish already applied by an earlier call is not a new completion).
-- name: job_finish_many__facts
SELECT id, queue, group_key, state, lease_token FROM conveyor_job WHERE id IN (SELECT value FROM json_each(:ids));

-- Terminal failure or cancellation; :state is 'failed' or 'cancelled'.
-- name: job_finish_many__end
UPDATE conveyor_job
SET state = :state, finished_at = :now, result = NULL, error = coalesce(:error, error),
    expires_at = CASE :state WHEN 'failed' THEN :now + keep_failed END,
    lease_expires_at = NULL, worker_id = NULL, cancel_requested = 0, isolated = 0
WHERE id = :id AND state = 'active' AND lease_token = :token
RETURNING queue, state, group_key;

-- name: job_finish_many__fence
SELECT cancel_requested FROM conveyor_job
WHERE id = :id AND state = 'active' AND lease_token = :token;

-- name: job_finish_many__retry
UPDATE conveyor_job
SET state = 'retrying', run_at = :now + :delay, error = coalesce(:error, error),
    lease_expires_at = NULL, worker_id = NULL, cancel_requested = 0, isolated = 0
WHERE id = :id AND state = 'active' AND lease_token = :token
RETURNING queue, state, group_key;

-- Snooze (:state 'scheduled', :delay from now) or requeue (:state 'queued', run time kept,
-- :delay NULL): the attempt is given back.
-- name: job_finish_many__give_back
UPDATE conveyor_job
SET state = :state, run_at = coalesce(:now + :delay, run_at), attempt = max(attempt - 1, 0),
    error = coalesce(:error, error),
    lease_expires_at = NULL, worker_id = NULL, cancel_requested = 0, isolated = 0
WHERE id = :id AND state = 'active' AND lease_token = :token
RETURNING queue, state, group_key;

-- name: job__finished_with
SELECT state, lease_token FROM conveyor_job WHERE id = :id;

-- Appends [attempt, now, error] to the job's history, keeping the last :keep entries (one is
-- added at a time, so at most one needs to go). A history that is not a JSON array (written
-- by hand or by a foreign producer) starts afresh rather than failing the transition.
-- name: job__note_error
UPDATE conveyor_job
SET errors = (
    SELECT CASE WHEN json_array_length(h) > :keep THEN json_remove(h, '$[0]') ELSE h END
    FROM (
        SELECT json_insert(
            CASE WHEN json_valid(errors) AND json_type(errors) = 'array' THEN errors
                ELSE '[]' END,
            '$[#]', json_array(attempt, :now, substr(:error, 1, :chars))
        ) AS h
    )
)
WHERE id = :id AND state = 'active' AND lease_token = :token;

-- Keeps the newest :keep completed jobs of one queue.
-- name: job_finish_many__trim_completed
DELETE FROM conveyor_job
WHERE id IN (
    SELECT id FROM conveyor_job
    WHERE queue = :queue AND state = 'completed'
    ORDER BY finished_at DESC, seq DESC
    LIMIT -1 OFFSET :keep
);

-- name: job_expired
SELECT * FROM conveyor_job INDEXED BY conveyor_job_lease_idx
WHERE state = 'active' AND lease_expires_at <= :now
ORDER BY lease_expires_at, seq
LIMIT :limit;

-- A rescue applies only to a job still active with the token the rescuer saw, its lease still
-- expired; it takes the lease away (the token too: a late finish of the lost attempt is then
-- refused).
-- name: job_rescue_many__requeue
UPDATE conveyor_job
SET state = 'queued', attempt = max(attempt - 1, 0), stalls = :stalls, run_at = :now,
    error = :error,
    lease_token = NULL, lease_expires_at = NULL, worker_id = NULL, cancel_requested = 0,
    isolated = 0
WHERE id = :id AND state = 'active' AND lease_token = :token AND lease_expires_at <= :now
RETURNING queue, state, group_key;

-- A rescued job failed (:state 'failed') or cancelled ('cancelled').
-- name: job_rescue_many__end
UPDATE conveyor_job
SET state = :state, finished_at = :now, stalls = :stalls, error = :error, result = NULL,
    expires_at = CASE :state WHEN 'failed' THEN :now + keep_failed END,
    lease_token = NULL, lease_expires_at = NULL, worker_id = NULL, cancel_requested = 0,
    isolated = 0
WHERE id = :id AND state = 'active' AND lease_token = :token AND lease_expires_at <= :now
RETURNING queue, state, group_key;

-- name: job_rescue_many__fence
SELECT cancel_requested FROM conveyor_job
WHERE id = :id AND state = 'active' AND lease_token = :token AND lease_expires_at <= :now;

-- name: job_promote_due
UPDATE conveyor_job
SET state = 'queued'
WHERE id IN (
    SELECT id FROM conveyor_job INDEXED BY conveyor_job_due_idx
    WHERE state IN ('scheduled', 'retrying') AND run_at <= :now
    ORDER BY run_at, seq
    LIMIT :limit
)
RETURNING queue;

-- An operator's cancel: no attempt's error, so no history entry.
-- name: job_cancel_many__waiting
UPDATE conveyor_job
SET state = 'cancelled', finished_at = :now, error = 'cancelled', result = NULL,
    lease_expires_at = NULL, worker_id = NULL, cancel_requested = 0, isolated = 0
WHERE id = :id;

-- name: job_cancel_many__active
UPDATE conveyor_job SET cancel_requested = 1 WHERE id = :id;

-- name: job_retry_many
UPDATE conveyor_job
SET state = 'queued', max_attempts = attempt + 1, run_at = :now, finished_at = NULL,
    expires_at = NULL, stalls = 0, cancel_requested = 0, seq = :seq
WHERE id = :id
RETURNING queue;

-- name: job_purge
DELETE FROM conveyor_job
WHERE state IN (SELECT value FROM json_each(:states))
  AND (:queue IS NULL OR queue = :queue)
  AND (:finished_before IS NULL OR finished_at < :finished_before);

-- Finished jobs of one state older than :cutoff, oldest first.
-- name: job_prune_finished
DELETE FROM conveyor_job
WHERE id IN (
    SELECT id FROM conveyor_job INDEXED BY conveyor_job_age_idx
    WHERE state = :state AND finished_at < :cutoff
    ORDER BY finished_at, seq
    LIMIT :limit
);

-- Finished jobs whose own retention expired by :now, earliest first (only finished jobs have
-- an expiry: a retry clears it).
-- name: job_prune_finished__expired
DELETE FROM conveyor_job
WHERE id IN (
    SELECT id FROM conveyor_job INDEXED BY conveyor_job_expiry_idx
    WHERE expires_at IS NOT NULL AND expires_at <= :now
    ORDER BY expires_at, seq
    LIMIT :limit
);

-- Completed jobs of one queue beyond its newest :keep, oldest first, at most :limit.
-- name: job_prune_finished__trim_completed
DELETE FROM conveyor_job
WHERE id IN (
    SELECT id FROM (
        SELECT id, finished_at, seq FROM conveyor_job
        WHERE queue = :queue AND state = 'completed'
        ORDER BY finished_at DESC, seq DESC
        LIMIT -1 OFFSET :keep
    )
    ORDER BY finished_at, seq
    LIMIT :limit
);

-- Progress is fenced like a finish: written only while the job is active with the token.
-- name: job_progress_many
UPDATE conveyor_job
SET progress = :fraction, progress_message = :message, progress_at = :now
WHERE id = :id AND state = 'active' AND lease_token = :token;

-- name: job_get_many
SELECT * FROM conveyor_job WHERE id IN (SELECT value FROM json_each(:ids));

-- One queue and state, newest first, from a keyset cursor: the caller merges the ranges.
-- name: job_list
SELECT * FROM conveyor_job INDEXED BY conveyor_job_list_idx
WHERE queue = :queue AND state = :state
  AND (:name IS NULL OR name = :name)
  AND seq < coalesce(:before_seq, 9223372036854775807)
ORDER BY seq DESC
LIMIT :limit;

-- name: job_list__queues
SELECT name FROM conveyor_queue ORDER BY name;

-- name: job_count_by_state
SELECT state, count(*) AS n FROM conveyor_job
WHERE (:queue IS NULL OR queue = :queue)
GROUP BY state;

-- name: queue_list
SELECT name, paused FROM conveyor_queue ORDER BY name;

-- name: queue_list__counts
SELECT queue, state, count(*) AS n FROM conveyor_job GROUP BY queue, state;

-- name: queue_pause
INSERT INTO conveyor_queue (name, paused) VALUES (:queue, 1)
ON CONFLICT (name) DO UPDATE SET paused = 1;

-- name: queue_resume
UPDATE conveyor_queue SET paused = 0 WHERE name = :queue;

-- name: worker_heartbeat
INSERT INTO conveyor_worker (
    id, hostname, pid, queues, concurrency, started_at, last_seen_at, running, processed,
    names, expires_at
) VALUES (
    :id, :hostname, :pid, :queues, :concurrency, :started_at, :now, :running, :processed,
    :names, :expires_at
)
ON CONFLICT (id) DO UPDATE SET
    names = excluded.names,
    hostname = excluded.hostname,
    pid = excluded.pid,
    queues = excluded.queues,
    concurrency = excluded.concurrency,
    started_at = excluded.started_at,
    last_seen_at = excluded.last_seen_at,
    running = excluded.running,
    processed = excluded.processed,
    expires_at = excluded.expires_at;

-- name: worker_heartbeat__prune
DELETE FROM conveyor_worker WHERE expires_at <= :now;

-- name: worker_deregister
DELETE FROM conveyor_worker WHERE id = :id;

-- Ties on started_at keep first-registration order (rowid), as the reference does.
-- name: worker_list
SELECT * FROM conveyor_worker WHERE expires_at > :now ORDER BY started_at, rowid;

-- Takes the lease when free, expired or already ours; returns a row only on success.
-- name: leader_acquire
INSERT INTO conveyor_leader (name, holder, expires_at) VALUES (:name, :holder, :expires_at)
ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
WHERE conveyor_leader.holder = excluded.holder OR conveyor_leader.expires_at <= :now
RETURNING holder;

-- name: route_register
INSERT INTO conveyor_route (name, queue, updated_at) VALUES (:name, :queue, :now)
ON CONFLICT (name) DO UPDATE SET queue = excluded.queue, updated_at = excluded.updated_at;

-- name: route_list
SELECT name, queue FROM conveyor_route ORDER BY name;

-- name: leader_release
DELETE FROM conveyor_leader WHERE name = :name AND holder = :holder;

-- Changes whenever another connection commits; how idle workers in other processes notice work.
-- name: listen__data_version
PRAGMA data_version;

-- Dedup keys (see migrations/0004_dedup.sql): the holder of a key, with the holder job as it
-- is now; no row when the key has no record (or its job is gone).
-- name: job_insert_many__dedup_holder
SELECT d.job_id, d.mode, d.expires_at, j.name, j.state, j.started_at, j.run_at
FROM conveyor_dedup d JOIN conveyor_job j ON j.id = d.job_id
WHERE d.queue = :queue AND d.key = :key;

-- name: job_insert_many__dedup_take
INSERT INTO conveyor_dedup (queue, key, job_id, mode, expires_at)
VALUES (:queue, :key, :id, :mode, :expires_at)
ON CONFLICT (queue, key) DO UPDATE SET
    job_id = excluded.job_id, mode = excluded.mode, expires_at = excluded.expires_at;

-- A debounce: the waiting holder takes the new payload, headers and run time.
-- The new payload may belong to another group: the job moves with it (see the trigger
-- conveyor_group_join of migrations/0007_groups.sql).
-- name: job_insert_many__dedup_replace
UPDATE conveyor_job
SET payload = :payload, headers = :headers, run_at = :run_at, group_key = :group_key,
    group_concurrency = :group_concurrency, group_rate_count = :group_rate_count,
    group_rate_per = :group_rate_per
WHERE id = :id AND state = 'scheduled'
RETURNING id;
-- name: rate_limit__read
SELECT queue, starts, blocked_until FROM conveyor_rate_limit
WHERE queue IN (SELECT value FROM json_each(:queues));

-- name: rate_limit__log
INSERT INTO conveyor_rate_limit (queue, starts) VALUES (:queue, :starts)
ON CONFLICT (queue) DO UPDATE SET starts = excluded.starts;

-- name: rate_limit_block
INSERT INTO conveyor_rate_limit (queue, blocked_until) VALUES (:queue, :until)
ON CONFLICT (queue) DO UPDATE
SET blocked_until = max(coalesce(blocked_until, :until), :until);
