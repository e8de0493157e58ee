-- Conveyor schema for PostgreSQL, version 2: cron and interval schedules.

-- One row per schedule: what the workers that run it declared (cron_register), and what its
-- latest tick did (cron_fire). A fire records its tick here and inserts the tick's job in one
-- statement, whose ON CONFLICT ... WHERE last_tick < tick lets one caller of each tick win.
CREATE TABLE {schema}.conveyor_cron (
    name          text             NOT NULL PRIMARY KEY,
    queue         text             NOT NULL,
    job_name      text             NOT NULL,
    expression    text             NOT NULL,
    tz            text             NOT NULL,
    catch_up      text             NOT NULL,
    overlap       text             NOT NULL,
    registered_at double precision NOT NULL,
    last_tick     bigint,
    last_status   text             CHECK (last_status IN ('fired', 'skipped')),
    last_fired_at double precision,
    last_job_id   text
);
