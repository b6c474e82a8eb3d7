-- TRANSITIONAL, test-only: the tables the web reads from the alerts and history branches
-- (contracts in PLAN.md), created here only when absent because those branches have not been
-- merged into `web` yet. The lead removes this file (and its use in tests/webseed.py) at merge,
-- when migrations 0002_alerts.sql and 0003_history.sql create the real tables.

CREATE TABLE IF NOT EXISTS url_state (
    url_id    bigint PRIMARY KEY REFERENCES url (id) ON DELETE CASCADE,
    state     text NOT NULL DEFAULT 'unknown' CHECK (state IN ('unknown', 'up', 'down')),
    since     timestamptz,
    last_slot timestamptz
);

CREATE TABLE IF NOT EXISTS incident (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    url_id           bigint NOT NULL,
    started_at       timestamptz NOT NULL,
    ended_at         timestamptz,
    first_error_kind text, first_error text,
    last_error_kind  text, last_error text,
    failed_checks    integer NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS incident_one_open ON incident (url_id) WHERE ended_at IS NULL;

CREATE TABLE IF NOT EXISTS rollup_hour (
    url_id bigint, bucket timestamptz, checks bigint, ok bigint, failed bigint,
    rt_count bigint, rt_sum float8, rt_min float8, rt_max float8, rt_hist integer[],
    cert_days_min integer, PRIMARY KEY (url_id, bucket)
);

CREATE TABLE IF NOT EXISTS rollup_day (
    url_id bigint, bucket timestamptz, checks bigint, ok bigint, failed bigint,
    rt_count bigint, rt_sum float8, rt_min float8, rt_max float8, rt_hist integer[],
    cert_days_min integer, PRIMARY KEY (url_id, bucket)
);
