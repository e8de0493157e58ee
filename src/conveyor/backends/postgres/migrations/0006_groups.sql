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

-- One record per group of a queue: its limits (those of the job placed in it last, or none
-- when a block created it), how many of its jobs are queued and active (kept by the trigger
-- below), the sliding log of its recent starts (at most rate_count, oldest first), the block a
-- handler's RateLimited set, its turn (see conveyor.drivers.groups), and quiet_at, the instant
-- its rate window and block have both passed (when an idle record may be deleted).
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

-- The counts of a group follow its jobs on every path (insert, fetch, finish, rescue, cancel,
-- retry, promotion, purge, and any statement added later): each row a grouped job enters or
-- leaves `queued` or `active`, a trigger moves the counts, and a job entering `queued` sets its
-- group's limits to its own (creating the record if it is missing). The one exception to "no
-- PL/pgSQL" in this backend, kept this small: a trigger needs a function, and the triggers'
-- WHEN clauses keep plain jobs from ever calling it. Statements that touch several groups lock
-- their records first, in (queue, key) order, so the trigger never waits out of order.
CREATE FUNCTION {schema}.conveyor_group_count() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    was text := CASE WHEN TG_OP = 'INSERT' THEN NULL ELSE OLD.state END;
    now_state text := CASE WHEN TG_OP = 'DELETE' THEN NULL ELSE NEW.state END;
    queued_by integer := (now_state IS NOT DISTINCT FROM 'queued')::integer
                         - (was IS NOT DISTINCT FROM 'queued')::integer;
    active_by integer := (now_state IS NOT DISTINCT FROM 'active')::integer
                         - (was IS NOT DISTINCT FROM 'active')::integer;
BEGIN
    IF now_state = 'queued' THEN
        -- A record created here (its own was deleted while idle) takes its turn now, which for
        -- a job just made queued is at or after its run time.
        INSERT INTO {schema}.conveyor_group AS g (
            queue, key, name, concurrency, rate_count, rate_per, queued, active, turn, quiet_at
        ) VALUES (
            NEW.queue, NEW.group_key, NEW.name, coalesce(NEW.group_concurrency, 0),
            coalesce(NEW.group_rate_count, 0), coalesce(NEW.group_rate_per, 0),
            greatest(queued_by, 0), greatest(active_by, 0), NEW.run_at, NEW.run_at
        )
        ON CONFLICT (queue, key) DO UPDATE SET
            queued = greatest(g.queued + queued_by, 0),
            active = greatest(g.active + active_by, 0),
            name = excluded.name,
            concurrency = excluded.concurrency,
            rate_count = excluded.rate_count,
            rate_per = excluded.rate_per;
    ELSE
        UPDATE {schema}.conveyor_group g
        SET queued = greatest(g.queued + queued_by, 0), active = greatest(g.active + active_by, 0)
        WHERE g.queue = coalesce(NEW.queue, OLD.queue)
          AND g.key = coalesce(NEW.group_key, OLD.group_key);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER conveyor_job_group_insert AFTER INSERT ON {schema}.conveyor_job
    FOR EACH ROW WHEN (NEW.group_key IS NOT NULL AND NEW.state IN ('queued', 'active'))
    EXECUTE FUNCTION {schema}.conveyor_group_count();
CREATE TRIGGER conveyor_job_group_update AFTER UPDATE OF state ON {schema}.conveyor_job
    FOR EACH ROW WHEN (NEW.group_key IS NOT NULL AND OLD.state IS DISTINCT FROM NEW.state
                       AND (OLD.state IN ('queued', 'active') OR NEW.state IN ('queued', 'active')))
    EXECUTE FUNCTION {schema}.conveyor_group_count();
CREATE TRIGGER conveyor_job_group_delete AFTER DELETE ON {schema}.conveyor_job
    FOR EACH ROW WHEN (OLD.group_key IS NOT NULL AND OLD.state IN ('queued', 'active'))
    EXECUTE FUNCTION {schema}.conveyor_group_count();
