-- Conveyor schema for SQLite: groups (per-key concurrency, rate limits and fair serving; see
-- conveyor.drivers.groups).

-- The group a job belongs to (NULL: a plain job) and that group's limits as the job carries
-- them: inserting the job sets the group's limits to these, and a group record deleted while
-- idle is made again from the limits of whichever job is placed in it next.
ALTER TABLE conveyor_job ADD COLUMN group_key TEXT;
ALTER TABLE conveyor_job ADD COLUMN group_concurrency INTEGER NOT NULL DEFAULT 0;
ALTER TABLE conveyor_job ADD COLUMN group_rate_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE conveyor_job ADD COLUMN group_rate_per REAL NOT NULL DEFAULT 0;

-- Grouped queued jobs live apart from the plain ones: the plain fetch reads these two indexes
-- and never meets a grouped job, and a group's own jobs are one range of the group index.
DROP INDEX conveyor_job_ready_idx;
CREATE INDEX conveyor_job_ready_idx ON conveyor_job (queue, priority, run_at, seq)
    WHERE state = 'queued' AND group_key IS NULL;
DROP INDEX conveyor_job_named_idx;
CREATE INDEX conveyor_job_named_idx ON conveyor_job (queue, name, priority, run_at, seq)
    WHERE state = 'queued' AND group_key IS NULL;
CREATE INDEX conveyor_job_group_idx ON conveyor_job (queue, group_key, priority, run_at, seq)
    WHERE state = 'queued' AND group_key IS NOT NULL;

-- One record per group of a queue: its limits and job name (those of the job inserted into it
-- last; name NULL for a record a block made before any job), how many of its jobs are queued and active (kept by the
-- triggers below), its turn, the block a handler's RateLimited set, its sliding log of starts
-- (a JSON array, oldest first, at most rate_count entries) and the instant its log and block
-- stop mattering (idle_until: an idle record may be deleted from then on).
CREATE TABLE conveyor_group (
    queue         TEXT    NOT NULL,
    key           TEXT    NOT NULL,
    name          TEXT,
    concurrency   INTEGER NOT NULL DEFAULT 0,
    rate_count    INTEGER NOT NULL DEFAULT 0,
    rate_per      REAL    NOT NULL DEFAULT 0,
    queued        INTEGER NOT NULL DEFAULT 0,
    active        INTEGER NOT NULL DEFAULT 0,
    turn          REAL    NOT NULL,
    blocked_until REAL,
    starts        TEXT    NOT NULL DEFAULT '[]',
    idle_until    REAL    NOT NULL DEFAULT 0,
    PRIMARY KEY (queue, key)
) WITHOUT ROWID;

-- The groups that could start a job, in turn order: only those with queued jobs and room under
-- their concurrency are in it (a full group leaves it and comes back when one of its jobs
-- leaves active), so a fetch reads as many groups as it may serve, however many there are.
CREATE INDEX conveyor_group_ready_idx ON conveyor_group (queue, turn, key)
    WHERE queued > 0 AND (concurrency = 0 OR active < concurrency);
-- The same per job name, for a worker that serves only some names.
CREATE INDEX conveyor_group_named_idx ON conveyor_group (queue, name, turn, key)
    WHERE queued > 0 AND (concurrency = 0 OR active < concurrency);
-- job_prune_finished: idle records whose log and block have passed, earliest first.
CREATE INDEX conveyor_group_idle_idx ON conveyor_group (idle_until)
    WHERE queued = 0 AND active = 0;

-- The triggers keep each group's counts on every change of a grouped job's state, whichever
-- statement (or process, or foreign writer) makes it, so no path can forget one. Their WHEN
-- clauses make plain jobs pay a comparison, nothing more.
--
-- An inserted grouped job joins its group: the record is made if missing (its turn: the
-- insert's now, the job's enqueued_at) and takes the job's limits and name, whatever the job's
-- state (a job scheduled for later sets them too).
CREATE TRIGGER conveyor_group_insert AFTER INSERT ON conveyor_job
WHEN NEW.group_key IS NOT NULL
BEGIN
    INSERT INTO conveyor_group (
        queue, key, name, concurrency, rate_count, rate_per, queued, active, turn
    ) VALUES (
        NEW.queue, NEW.group_key, NEW.name, NEW.group_concurrency, NEW.group_rate_count,
        NEW.group_rate_per, NEW.state = 'queued', NEW.state = 'active', NEW.enqueued_at
    )
    ON CONFLICT (queue, key) DO UPDATE SET
        queued = queued + excluded.queued,
        active = active + excluded.active,
        name = excluded.name,
        concurrency = excluded.concurrency,
        rate_count = excluded.rate_count,
        rate_per = excluded.rate_per;
END;

-- A grouped job that leaves queued or active (fetched, finished, rescued, cancelled, handed
-- back) frees its place; one that becomes queued (promoted, retried, rescued, handed back) or
-- active (the fetch) counts in its group. One trigger for both, so a plain job's state change
-- runs one trigger program, not two. Becoming queued does not give the group the job's limits
-- (they are those of the job inserted last), unless the record is gone (pruned while idle):
-- then it is made again from the job's limits, its turn the job's run time (no later than the
-- step that placed it); a record only a block made (no name yet) takes them too. A job's group
-- never changes, so NEW.group_key names it.
CREATE TRIGGER conveyor_group_move AFTER UPDATE OF state ON conveyor_job
WHEN NEW.group_key IS NOT NULL AND NEW.state IS NOT OLD.state
BEGIN
    UPDATE conveyor_group
    SET queued = max(queued - (OLD.state = 'queued'), 0),
        active = max(active - (OLD.state = 'active'), 0)
    WHERE queue = OLD.queue AND key = OLD.group_key AND OLD.state IN ('queued', 'active');
    -- (WHERE on the SELECT: what tells the parser that ON starts the upsert, not a join.)
    INSERT INTO conveyor_group (
        queue, key, name, concurrency, rate_count, rate_per, queued, active, turn
    )
    SELECT NEW.queue, NEW.group_key, NEW.name, NEW.group_concurrency, NEW.group_rate_count,
        NEW.group_rate_per, NEW.state = 'queued', NEW.state = 'active', NEW.run_at
    WHERE NEW.state IN ('queued', 'active')
    ON CONFLICT (queue, key) DO UPDATE SET
        queued = queued + excluded.queued,
        active = active + excluded.active,
        concurrency = CASE WHEN name IS NULL THEN excluded.concurrency ELSE concurrency END,
        rate_count = CASE WHEN name IS NULL THEN excluded.rate_count ELSE rate_count END,
        rate_per = CASE WHEN name IS NULL THEN excluded.rate_per ELSE rate_per END,
        name = coalesce(name, excluded.name);
END;

-- A job whose group changes (a debounced job took a payload of another group) joins the new
-- group as an insert does, and leaves the old one's counts if it was in them.
CREATE TRIGGER conveyor_group_join AFTER UPDATE OF group_key ON conveyor_job
WHEN NEW.group_key IS NOT OLD.group_key
BEGIN
    UPDATE conveyor_group
    SET queued = max(queued - (OLD.state = 'queued'), 0),
        active = max(active - (OLD.state = 'active'), 0)
    WHERE queue = OLD.queue AND key = OLD.group_key AND OLD.state IN ('queued', 'active');
    INSERT INTO conveyor_group (
        queue, key, name, concurrency, rate_count, rate_per, queued, active, turn
    )
    SELECT NEW.queue, NEW.group_key, NEW.name, NEW.group_concurrency, NEW.group_rate_count,
        NEW.group_rate_per, NEW.state = 'queued', NEW.state = 'active', NEW.enqueued_at
    WHERE NEW.group_key IS NOT NULL
    ON CONFLICT (queue, key) DO UPDATE SET
        queued = queued + excluded.queued,
        active = active + excluded.active,
        name = excluded.name,
        concurrency = excluded.concurrency,
        rate_count = excluded.rate_count,
        rate_per = excluded.rate_per;
END;

-- A deleted job (purged) leaves its group too.
CREATE TRIGGER conveyor_group_delete AFTER DELETE ON conveyor_job
WHEN OLD.group_key IS NOT NULL AND OLD.state IN ('queued', 'active')
BEGIN
    UPDATE conveyor_group
    SET queued = max(queued - (OLD.state = 'queued'), 0),
        active = max(active - (OLD.state = 'active'), 0)
    WHERE queue = OLD.queue AND key = OLD.group_key;
END;
