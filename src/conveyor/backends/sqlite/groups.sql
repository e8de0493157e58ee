-- Queries of the SQLite backend's groups (see migrations/0007_groups.sql and _groups.py), named
-- as in queries.sql. The triggers of the migration keep each group's queued and active counts;
-- these statements read the groups a fetch may serve and write what serving them changed.
--
-- Every read of the eligible groups repeats the partial index's WHERE verbatim, which is what
-- lets SQLite use it.

-- The first :limit groups of a queue whose turn has come, in turn order (ties by key).
-- name: group_fetch__head
SELECT queue, key, name, concurrency, rate_count, rate_per, queued, active, turn,
    blocked_until, starts
FROM conveyor_group INDEXED BY conveyor_group_ready_idx
WHERE queue = :queue AND queued > 0 AND (concurrency = 0 OR active < concurrency)
  AND turn <= :now
ORDER BY turn, key
LIMIT :limit;

-- The same for the groups of one job name: a worker serving only some names reads one range
-- per name when groups of other names fill the head.
-- name: group_fetch__named
SELECT queue, key, name, concurrency, rate_count, rate_per, queued, active, turn,
    blocked_until, starts
FROM conveyor_group INDEXED BY conveyor_group_named_idx
WHERE queue = :queue AND name = :name AND queued > 0
  AND (concurrency = 0 OR active < concurrency)
  AND turn <= :now
ORDER BY turn, key
LIMIT :limit;

-- A group's first :limit queued jobs in run order: one range of the group index, however many
-- jobs the group or the queue holds.
-- name: group_fetch__jobs
SELECT id FROM conveyor_job INDEXED BY conveyor_job_group_idx
WHERE queue = :queue AND group_key = :key AND state = 'queued' AND group_key IS NOT NULL
ORDER BY priority, run_at, seq
LIMIT :limit;

-- A group served (or found unable to start any job) takes its new turn and log.
-- name: group_fetch__served
UPDATE conveyor_group SET turn = :turn, starts = :starts, idle_until = :idle_until
WHERE queue = :queue AND key = :key;

-- Whether a group may start a job now: after one of its jobs left active, to wake listeners.
-- name: group__eligible
SELECT 1 FROM conveyor_group
WHERE queue = :queue AND key = :key AND queued > 0
  AND (concurrency = 0 OR active < concurrency) AND turn <= :now;

-- The earliest turn still to come of a queue's groups that have queued jobs and room.
-- name: group_wait
SELECT turn FROM conveyor_group INDEXED BY conveyor_group_ready_idx
WHERE queue = :queue AND queued > 0 AND (concurrency = 0 OR active < concurrency)
  AND turn > :now
ORDER BY turn
LIMIT 1;

-- name: group_wait__named
SELECT turn FROM conveyor_group INDEXED BY conveyor_group_named_idx
WHERE queue = :queue AND name = :name AND queued > 0
  AND (concurrency = 0 OR active < concurrency)
  AND turn > :now
ORDER BY turn
LIMIT 1;

-- A block (a later one already recorded stands) moves the group's turn to its end; a group
-- without a record gets one, with no limits, so the block holds the jobs placed later.
-- name: group_block
INSERT INTO conveyor_group (queue, key, turn, blocked_until, idle_until)
VALUES (:queue, :key, :until, :until, :until)
ON CONFLICT (queue, key) DO UPDATE SET
    blocked_until = max(coalesce(blocked_until, excluded.blocked_until), excluded.blocked_until),
    turn = max(turn, excluded.turn),
    idle_until = max(idle_until, excluded.idle_until);

-- Records of groups with no queued or active job whose log and block have passed, earliest
-- first, at most :limit (job_prune_finished).
-- name: group_prune
DELETE FROM conveyor_group
WHERE (queue, key) IN (
    SELECT queue, key FROM conveyor_group INDEXED BY conveyor_group_idle_idx
    WHERE queued = 0 AND active = 0 AND idle_until <= :now
    ORDER BY idle_until
    LIMIT :limit
);
