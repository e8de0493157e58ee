-- Conveyor schema for PostgreSQL, version 6: groups (see conveyor.drivers.groups).

-- A grouped job's group key (NULL: a plain job) and its group's limits, carried by the job so
-- that a group record deleted while idle is recreated from whichever job is placed in it next.
ALTER TABLE {schema}.conveyor_job
    ADD COLUMN group_key text,
    ADD COLUMN group_concurrency integer,
    ADD COLUMN group_rate_count integer,
    ADD COLUMN group_rate_per double precision;

-- The plain fetch reads only plain jobs: grouped queued jobs live apart, in their groups, so a
-- group holding 100,000 jobs never lengthens the plain fetch's range.
DROP INDEX {schema}.conveyor_job_ready_idx;
CREATE INDEX conveyor_job_ready_idx ON {schema}.conveyor_job (queue, priority, run_at, seq)
    WHERE state = 'queued' AND group_key IS NULL;
-- A group's queued jobs in the order they run: the grouped fetch reads as many as it takes.
CREATE INDEX conveyor_job_group_ready_idx
    ON {schema}.conveyor_job (queue, group_key, priority, run_at, seq)
    WHERE state = 'queued' AND group_key IS NOT NULL;
-- Whether a queue has grouped jobs due: what the fetch probes before it leases (empty, and so
-- free to probe and to keep, in a queue without groups).
CREATE INDEX conveyor_job_group_due_idx ON {schema}.conveyor_job (queue, run_at)
    WHERE state IN ('scheduled', 'retrying') AND group_key IS NOT NULL;

-- One record per group of a queue: its limits (those of the job inserted into it last, or none
-- when a block created it), how many of its jobs are queued and active (kept by every
-- statement that moves a grouped job into or out of those states, in the same statement, one
-- update per group however many of its jobs move), the sliding log of its recent starts (at most rate_count, oldest first), the block a
-- handler's RateLimited set, when a fetch last served it (NULL: never), its turn (see
-- conveyor.drivers.groups: when it was last served or created, or later, when its rate window
-- frees or its block ends; worked out again when a job brings new limits), and quiet_at, the
-- instant its rate window and block have both passed (when an idle record may be deleted).
CREATE TABLE {schema}.conveyor_group (
    queue         text               NOT NULL,
    key           text               NOT NULL,
    name          text,
    concurrency   integer            NOT NULL DEFAULT 0,
    rate_count    integer            NOT NULL DEFAULT 0,
    rate_per      double precision   NOT NULL DEFAULT 0,
    queued        integer            NOT NULL DEFAULT 0,
    active        integer            NOT NULL DEFAULT 0,
    starts        double precision[] NOT NULL DEFAULT '{}',
    blocked_until double precision,
    served_at     double precision,
    turn          double precision   NOT NULL,
    quiet_at      double precision   NOT NULL,
    PRIMARY KEY (queue, key)
);
-- The groups a fetch may serve, in turn order: only those with queued jobs and room under
-- their concurrency, so a full or empty group costs a fetch nothing (a full one comes back
-- when one of its jobs leaves active). Read up to the fetch's limit; its first entry past now
-- is group_wait's answer.
CREATE INDEX conveyor_group_eligible_idx ON {schema}.conveyor_group (queue, turn, key)
    WHERE queued > 0 AND (concurrency = 0 OR active < concurrency);
-- job_prune_finished: idle records, by the instant they may go.
CREATE INDEX conveyor_group_idle_idx ON {schema}.conveyor_group (quiet_at)
    WHERE queued = 0 AND active = 0;
