-- Conveyor schema for SQLite: job headers, and per-minute throughput counters.

-- NewJob.headers: a JSON object of text to text (trace context, the paths of secret payload
-- fields), stored verbatim and returned on every read. NULL: none. Jobs stored before this
-- migration have none.
ALTER TABLE conveyor_job ADD COLUMN headers TEXT;

-- How many attempts of a queue's jobs ended completed, retried or failed in one minute
-- (epoch seconds // 60), added to by every worker's flush (stats_add) and kept for
-- conveyor.drivers.common.STATS_KEEP_MINUTES. A table with rowids, not WITHOUT ROWID: its rows
-- then lie in the order they were made, so a flush, which mostly adds to the buckets of the
-- current minute of the queues it served, rewrites the last page or two of the table instead
-- of one page per queue. That measured ~30% less time under the write lock per flush (the
-- lock every job transition wants too), against reads ~40% slower: a dashboard's request,
-- which takes no lock.
CREATE TABLE conveyor_stats (
    queue     TEXT    NOT NULL,
    minute    INTEGER NOT NULL,
    completed INTEGER NOT NULL DEFAULT 0,
    retried   INTEGER NOT NULL DEFAULT 0,
    failed    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (queue, minute)
);

-- stats_add: the oldest buckets of every queue, so each add deletes a bounded number of
-- expired ones, those of queues no worker reports on any more included.
CREATE INDEX conveyor_stats_minute_idx ON conveyor_stats (minute);
