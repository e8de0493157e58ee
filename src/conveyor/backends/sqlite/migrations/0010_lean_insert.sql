-- Conveyor schema for SQLite: a single enqueue writes fewer pages.
--
-- Each page an insert touches is one more WAL frame written (and, with synchronous=full,
-- flushed) per commit, which is what a single enqueue mostly costs. Before this migration a
-- queued job touched ten pages: the table, its id index, seven secondary indexes and the
-- sequence counter's row.

-- The lease index only serves job_expired, which reads active jobs; partial, it no longer
-- takes an entry for every waiting or finished job.
DROP INDEX conveyor_job_lease_idx;
CREATE INDEX conveyor_job_lease_idx ON conveyor_job (state, lease_expires_at)
    WHERE state = 'active';

-- The sequence counter is no longer advanced by every insert: a new seq is one more than both
-- the largest seq in the table (the unique seq index's last entry) and the counter. The counter
-- only has to cover what the table no longer shows: a deleted job whose seq was above every
-- remaining one (the newest jobs, purged), so that its seq is never handed out again. Deleting
-- older jobs (retention, pruning) leaves the counter alone, so its page is almost never written.
UPDATE conveyor_sequence
SET value = max(value, coalesce((SELECT max(seq) FROM conveyor_job), 0))
WHERE name = 'job_seq';

CREATE TRIGGER conveyor_sequence_keep AFTER DELETE ON conveyor_job
WHEN OLD.seq > coalesce((SELECT max(seq) FROM conveyor_job), 0)
BEGIN
    UPDATE conveyor_sequence SET value = OLD.seq WHERE name = 'job_seq' AND value < OLD.seq;
END;
