-- Queries of the SQLite backend's deletion of finished jobs and its per-minute throughput
-- counters (see _inspect.py and migrations/0008_headers_stats.sql), named as in queries.sql.

-- Deletes one finished job. The triggers of the job table take what it held elsewhere with it
-- (its dedup key: conveyor_dedup_forget; its group's counts: conveyor_group_delete, which a
-- finished job no longer adds to), as for every other delete.
-- name: job_delete_many
DELETE FROM conveyor_job
WHERE id = :id AND state IN ('completed', 'failed', 'cancelled');

-- Adds one sample to its bucket, creating it.
-- name: stats_add
INSERT INTO conveyor_stats (queue, minute, completed, retried, failed)
VALUES (:queue, :minute, :completed, :retried, :failed)
ON CONFLICT (queue, minute) DO UPDATE SET
    completed = completed + excluded.completed,
    retried = retried + excluded.retried,
    failed = failed + excluded.failed;

-- The oldest :limit buckets before :oldest, whatever their queue: one range of the minute
-- index, so the work is bounded however many expired buckets there are.
-- name: stats_add__expire
DELETE FROM conveyor_stats
WHERE rowid IN (
    SELECT rowid FROM conveyor_stats INDEXED BY conveyor_stats_minute_idx
    WHERE minute < :oldest
    ORDER BY minute
    LIMIT :limit
);

-- The queues that have buckets, in order: one seek of the primary key per queue (a skip
-- scan), not a read of every bucket.
-- name: stats_read__queues
WITH RECURSIVE queues (queue) AS (
    SELECT min(queue) FROM conveyor_stats
    UNION ALL
    SELECT (SELECT min(queue) FROM conveyor_stats WHERE queue > queues.queue)
    FROM queues
    WHERE queues.queue IS NOT NULL
)
SELECT queue FROM queues WHERE queue IS NOT NULL;

-- One queue's newest :limit buckets from :since_minute on, newest first: one range of the
-- primary key.
-- name: stats_read
SELECT queue, minute, completed, retried, failed FROM conveyor_stats
WHERE queue = :queue AND minute >= :since_minute
ORDER BY minute DESC
LIMIT :limit;
