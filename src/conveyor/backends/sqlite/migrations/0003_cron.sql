-- Conveyor schema for SQLite, version 3: cron and interval schedules.

-- One row per schedule: what the workers that run it declared (cron_register), and what its
-- latest tick did (cron_fire). A tick is recorded here and its job inserted in one transaction,
-- so a tick fires once however many workers fire it.
CREATE TABLE conveyor_cron (
    name          TEXT NOT NULL PRIMARY KEY,
    queue         TEXT NOT NULL,
    job_name      TEXT NOT NULL,
    expression    TEXT NOT NULL,
    tz            TEXT NOT NULL,
    catch_up      TEXT NOT NULL,
    overlap       TEXT NOT NULL,
    registered_at REAL NOT NULL,
    last_tick     INTEGER,
    last_status   TEXT CHECK (last_status IN ('fired', 'skipped')),
    last_fired_at REAL,
    last_job_id   TEXT
);
