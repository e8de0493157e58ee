-- Conveyor schema for PostgreSQL, version 7: job headers and per-minute throughput counters.

-- A job's headers (conveyor.core.headers): a JSON object of text, opaque to the backend. text,
-- not jsonb, so that it reads back byte for byte as it was written (jsonb would reorder keys
-- and respace it). NULL: no headers.
ALTER TABLE {schema}.conveyor_job ADD COLUMN headers text;

-- How many attempts of a queue's jobs ended in each minute (epoch seconds // 60), by how they
-- ended (records.QueueStats). Workers add to a bucket every few seconds (stats_add, an upsert);
-- stats_read reads a range of the primary key per queue.
CREATE TABLE {schema}.conveyor_stats (
    queue     text   NOT NULL,
    minute    bigint NOT NULL,
    completed bigint NOT NULL DEFAULT 0,
    retried   bigint NOT NULL DEFAULT 0,
    failed    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (queue, minute)
);
-- stats_add deletes the buckets older than common.STATS_KEEP_MINUTES, oldest first, a bounded
-- number per call, whichever queue they belong to (a queue no worker serves any more too).
CREATE INDEX conveyor_stats_minute_idx ON {schema}.conveyor_stats (minute);
