-- The whole schema of the PostgreSQL backend, as every migration together leaves it
-- (generated from the catalogs; tests/backends/postgres checks it). {schema} stands for
-- the schema the URL names. The migrations in migrations/ are what is applied.

CREATE TABLE {schema}.conveyor_cron (
    name text NOT NULL,
    queue text NOT NULL,
    job_name text NOT NULL,
    expression text NOT NULL,
    tz text NOT NULL,
    catch_up text NOT NULL,
    overlap text NOT NULL,
    registered_at double precision NOT NULL,
    last_tick bigint,
    last_status text,
    last_fired_at double precision,
    last_job_id text,
    CONSTRAINT conveyor_cron_last_status_check CHECK ((last_status = ANY (ARRAY['fired'::text, 'skipped'::text]))),
    CONSTRAINT conveyor_cron_pkey PRIMARY KEY (name)
);

CREATE TABLE {schema}.conveyor_dedup (
    queue text NOT NULL,
    key text NOT NULL,
    job_id text NOT NULL,
    mode text NOT NULL,
    expires_at double precision,
    CONSTRAINT conveyor_dedup_job_id_fkey FOREIGN KEY (job_id) REFERENCES {schema}.conveyor_job(id) ON DELETE CASCADE,
    CONSTRAINT conveyor_dedup_mode_check CHECK ((mode = ANY (ARRAY['until_started'::text, 'until_finished'::text, 'throttle'::text, 'debounce'::text]))),
    CONSTRAINT conveyor_dedup_pkey PRIMARY KEY (queue, key)
);

CREATE TABLE {schema}.conveyor_group (
    queue text NOT NULL,
    key text NOT NULL,
    name text,
    concurrency integer NOT NULL DEFAULT 0,
    rate_count integer NOT NULL DEFAULT 0,
    rate_per double precision NOT NULL DEFAULT 0,
    queued integer NOT NULL DEFAULT 0,
    active integer NOT NULL DEFAULT 0,
    starts double precision[] NOT NULL DEFAULT '{}'::double precision[],
    blocked_until double precision,
    served_at double precision,
    turn double precision NOT NULL,
    quiet_at double precision NOT NULL,
    CONSTRAINT conveyor_group_pkey PRIMARY KEY (queue, key)
);

CREATE TABLE {schema}.conveyor_job (
    id text NOT NULL,
    queue text NOT NULL,
    name text NOT NULL,
    payload bytea NOT NULL,
    state text NOT NULL,
    priority integer NOT NULL DEFAULT 0,
    attempt integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL,
    run_at double precision NOT NULL,
    enqueued_at double precision NOT NULL,
    seq bigint NOT NULL,
    started_at double precision,
    finished_at double precision,
    lease_token text,
    lease_expires_at double precision,
    worker_id text,
    stalls integer NOT NULL DEFAULT 0,
    cancel_requested boolean NOT NULL DEFAULT false,
    isolated boolean NOT NULL DEFAULT false,
    result bytea,
    error text,
    errors jsonb,
    progress double precision,
    progress_message text,
    progress_at double precision,
    keep_completed double precision,
    keep_failed double precision,
    expires_at double precision,
    group_key text,
    group_concurrency integer,
    group_rate_count integer,
    group_rate_per double precision,
    headers text,
    CONSTRAINT conveyor_job_pkey PRIMARY KEY (id),
    CONSTRAINT conveyor_job_state_check CHECK ((state = ANY (ARRAY['scheduled'::text, 'queued'::text, 'active'::text, 'retrying'::text, 'completed'::text, 'failed'::text, 'cancelled'::text])))
) WITH (fillfactor=85);

CREATE TABLE {schema}.conveyor_leader (
    name text NOT NULL,
    holder text NOT NULL,
    expires_at double precision NOT NULL,
    CONSTRAINT conveyor_leader_pkey PRIMARY KEY (name)
);

CREATE TABLE {schema}.conveyor_meta (
    key text NOT NULL,
    value text NOT NULL,
    CONSTRAINT conveyor_meta_pkey PRIMARY KEY (key)
);

CREATE TABLE {schema}.conveyor_migration (
    name text NOT NULL,
    applied_at double precision NOT NULL,
    CONSTRAINT conveyor_migration_pkey PRIMARY KEY (name)
);

CREATE TABLE {schema}.conveyor_queue (
    name text NOT NULL,
    paused boolean NOT NULL DEFAULT false,
    CONSTRAINT conveyor_queue_pkey PRIMARY KEY (name)
);

CREATE TABLE {schema}.conveyor_rate_limit (
    queue text NOT NULL,
    starts double precision[] NOT NULL DEFAULT '{}'::double precision[],
    blocked_until double precision,
    CONSTRAINT conveyor_rate_limit_pkey PRIMARY KEY (queue)
);

CREATE TABLE {schema}.conveyor_route (
    name text NOT NULL,
    queue text NOT NULL,
    updated_at double precision NOT NULL,
    CONSTRAINT conveyor_route_pkey PRIMARY KEY (name)
);

CREATE TABLE {schema}.conveyor_stats (
    queue text NOT NULL,
    minute bigint NOT NULL,
    completed bigint NOT NULL DEFAULT 0,
    retried bigint NOT NULL DEFAULT 0,
    failed bigint NOT NULL DEFAULT 0,
    CONSTRAINT conveyor_stats_pkey PRIMARY KEY (queue, minute)
);

CREATE TABLE {schema}.conveyor_worker (
    id text NOT NULL,
    hostname text NOT NULL,
    pid integer NOT NULL,
    queues jsonb NOT NULL,
    names jsonb NOT NULL DEFAULT '[]'::jsonb,
    concurrency integer NOT NULL,
    started_at double precision NOT NULL,
    last_seen_at double precision NOT NULL,
    running integer NOT NULL DEFAULT 0,
    processed bigint NOT NULL DEFAULT 0,
    expires_at double precision NOT NULL,
    registered bigint GENERATED ALWAYS AS IDENTITY NOT NULL,
    CONSTRAINT conveyor_worker_pkey PRIMARY KEY (id)
);

CREATE INDEX conveyor_dedup_job_idx ON {schema}.conveyor_dedup USING btree (job_id);

CREATE INDEX conveyor_group_eligible_idx ON {schema}.conveyor_group USING btree (queue, turn, key) WHERE ((queued > 0) AND ((concurrency = 0) OR (active < concurrency)));

CREATE INDEX conveyor_group_idle_idx ON {schema}.conveyor_group USING btree (quiet_at) WHERE ((queued = 0) AND (active = 0));

CREATE INDEX conveyor_job_active_idx ON {schema}.conveyor_job USING btree (worker_id) WHERE (state = 'active'::text);

CREATE INDEX conveyor_job_age_idx ON {schema}.conveyor_job USING btree (state, finished_at, seq) WHERE (state = ANY (ARRAY['failed'::text, 'cancelled'::text]));

CREATE INDEX conveyor_job_due_idx ON {schema}.conveyor_job USING btree (queue, run_at, seq) WHERE (state = ANY (ARRAY['scheduled'::text, 'retrying'::text]));

CREATE INDEX conveyor_job_expiry_idx ON {schema}.conveyor_job USING btree (expires_at, seq) WHERE (expires_at IS NOT NULL);

CREATE INDEX conveyor_job_finished_idx ON {schema}.conveyor_job USING btree (queue, finished_at, seq) WHERE (state = 'completed'::text);

CREATE INDEX conveyor_job_group_due_idx ON {schema}.conveyor_job USING btree (queue, run_at) WHERE ((state = ANY (ARRAY['scheduled'::text, 'retrying'::text])) AND (group_key IS NOT NULL));

CREATE INDEX conveyor_job_group_ready_idx ON {schema}.conveyor_job USING btree (queue, group_key, priority, run_at, seq) WHERE ((state = 'queued'::text) AND (group_key IS NOT NULL));

CREATE INDEX conveyor_job_list_idx ON {schema}.conveyor_job USING btree (queue, state, seq);

CREATE INDEX conveyor_job_ready_idx ON {schema}.conveyor_job USING btree (queue, priority, run_at, seq) WHERE ((state = 'queued'::text) AND (group_key IS NULL));

CREATE INDEX conveyor_stats_minute_idx ON {schema}.conveyor_stats USING btree (minute);

CREATE SEQUENCE {schema}.conveyor_job_seq;

CREATE SEQUENCE {schema}.conveyor_worker_registered_seq;

CREATE OR REPLACE FUNCTION {schema}.conveyor_history_add(history jsonb, attempt integer, at double precision, error text, keep integer, chars integer)
 RETURNS jsonb
 LANGUAGE sql
 IMMUTABLE
AS $function$
    SELECT coalesce(jsonb_agg(h.e ORDER BY h.n), '[]'::jsonb)
    FROM (
        SELECT e, n FROM jsonb_array_elements(
            CASE WHEN jsonb_typeof(history) = 'array' THEN history ELSE '[]'::jsonb END
            || jsonb_build_array(jsonb_build_array(attempt, at, left(error, chars)))
        ) WITH ORDINALITY AS x(e, n)
        ORDER BY n DESC
        LIMIT keep
    ) h
$function$;
