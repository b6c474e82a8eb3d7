-- sitewatch schema, version 1. Table names and the task_result columns are a
-- contract (DESIGN.md section 2).

-- One row per monitored URL. next_check_at is the scheduling cursor: the due
-- time of the URL's next slot (slots are next_check_at + k * period).
CREATE TABLE url (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    url             text NOT NULL UNIQUE,
    period          integer NOT NULL CHECK (period > 0),
    regex           text,
    timeout         double precision NOT NULL CHECK (timeout > 0),
    method          text NOT NULL DEFAULT 'GET',
    expected_status text NOT NULL DEFAULT '200-399',
    max_redirects   integer NOT NULL DEFAULT 5,
    verify_tls      boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    next_check_at   timestamptz NOT NULL,
    skipped_slots   bigint NOT NULL DEFAULT 0      -- slots not checked: site still busy, or producer behind
);
-- The producer's "what is due" scan.
CREATE INDEX url_next_check_at_idx ON url (next_check_at);

-- One row per due slot, deleted when its result is written. UNIQUE (url_id):
-- a URL has at most one task outstanding, so a slow site cannot pile up work.
CREATE TABLE task (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    url_id           bigint NOT NULL UNIQUE REFERENCES url (id) ON DELETE CASCADE,
    scheduled_at     timestamptz NOT NULL,
    status           smallint NOT NULL DEFAULT 0,  -- 0 not started (as in the seed), 1 leased
    available_at     timestamptz NOT NULL,          -- claimable from: enqueue time, then lease expiry
    lease_owner      text,
    lease_expires_at timestamptz,
    attempts         integer NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now()
);
-- One index serves the claim of fresh tasks and of expired leases alike.
CREATE INDEX task_available_at_idx ON task (available_at);
-- A queue table: rows live for seconds, so vacuum it by row count, not by fraction.
ALTER TABLE task SET (autovacuum_vacuum_scale_factor = 0.0, autovacuum_vacuum_threshold = 5000,
                      autovacuum_vacuum_cost_delay = 0);

-- One row per finished slot. History is kept when a URL is removed (no
-- foreign key): url_id then names a URL that no longer exists.
CREATE TABLE task_result (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    url_id           bigint NOT NULL,
    scheduled_at     timestamptz NOT NULL,
    started_at       timestamptz NOT NULL,
    response_time_ms double precision,
    status_code      integer,
    regex_matched    boolean,
    ok               boolean NOT NULL,
    error_kind       text,
    error            text,
    cert_days_left   integer,
    attempt          integer NOT NULL DEFAULT 1,
    checked_by       text NOT NULL,
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (url_id, scheduled_at)                   -- a slot is recorded once
);

-- Producer -> consumers wake-up: see queries.sql (enqueue_due).
