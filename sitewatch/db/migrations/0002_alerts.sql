-- sitewatch schema, version 2: alerts (issue 8). Per-URL state, incidents, the notification
-- outbox and silences. The state moves in the same transaction as the result batch
-- (queries.sql complete_tasks calls alert_apply_results); the notifier child sends the outbox.

-- Per-URL overrides; NULL = the configuration's default (alerts.*).
ALTER TABLE url
    ADD COLUMN failure_threshold integer CHECK (failure_threshold BETWEEN 1 AND 1000),
    ADD COLUMN success_threshold integer CHECK (success_threshold BETWEEN 1 AND 1000),
    ADD COLUMN notify text[];        -- channel names (alerts.channels); NULL = alerts.default_channels

-- One row per URL: what decides whether to notify lives here, never in memory, so a kill -9
-- of every process neither repeats nor loses a notice.
CREATE TABLE url_state (
    url_id      bigint PRIMARY KEY REFERENCES url (id) ON DELETE CASCADE,
    state       text NOT NULL DEFAULT 'unknown' CHECK (state IN ('unknown', 'up', 'down')),
    since       timestamptz,        -- when the current state began (first slot of the streak that set it)
    last_slot   timestamptz,        -- newest scheduled_at applied (older results never move state)
    fail_streak integer NOT NULL DEFAULT 0,      -- consecutive failed slots (lost ones skipped)
    ok_streak   integer NOT NULL DEFAULT 0,      -- consecutive good slots
    streak_since timestamptz,                    -- first slot of the current streak, failed or good
    streak_error_kind text,                      -- first error of the current failed streak
    streak_error text,
    incident_id bigint,                          -- the open incident, if any
    notified_state text,                         -- state of the last up/down notice written
    -- Flapping (Nagios): outcome of the last 21 applied slots, bit 0 the newest, 1 = failed.
    flap_bits   integer NOT NULL DEFAULT 0,
    flap_len    smallint NOT NULL DEFAULT 0,
    flapping    boolean NOT NULL DEFAULT false,
    flap_seq    integer NOT NULL DEFAULT 0,      -- flapping episodes so far (idempotency keys)
    -- Certificate expiry: which certificate (bumped when days left jump up: renewed) and the
    -- smallest threshold (30, 14, 7, 1) already announced for it.
    cert_days_left integer,
    cert_seq    integer NOT NULL DEFAULT 0,
    cert_notified integer,
    updated_at  timestamptz
) WITH (fillfactor = 50);   -- rewritten on every result: room on the page keeps updates HOT
INSERT INTO url_state (url_id) SELECT id FROM url;

-- Every URL gets its state row when it is added: the result path then only UPDATEs url_state,
-- and never needs the url row's key-share lock (which would deadlock against `url remove`).
-- Once per statement, from its transition table: a per-row trigger tripled the cost of
-- importing 100,000 URLs. With INSERT ... ON CONFLICT the table holds only the inserted rows.
CREATE FUNCTION url_state_create() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO url_state (url_id) SELECT id FROM new_urls ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER url_state_create AFTER INSERT ON url REFERENCING NEW TABLE AS new_urls
    FOR EACH STATEMENT EXECUTE FUNCTION url_state_create();

-- A URL as incidents and notices keep it: userinfo and query string replaced, like
-- sitewatch/redact.py redact_url (stored URLs are normalised: no fragment).
CREATE FUNCTION alert_redact_url(url text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT regexp_replace(regexp_replace(url, '^([A-Za-z][A-Za-z0-9+.-]*://)[^/]*@', '\1***@'),
                          '\?.*$', '?***')
$$;

-- History is kept when a URL is removed (no FK, like task_result).
CREATE TABLE incident (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    url_id           bigint NOT NULL,
    url              text NOT NULL,              -- as monitored then, redacted (the URL may be removed later)
    started_at       timestamptz NOT NULL,       -- first failed slot of the streak
    ended_at         timestamptz,                -- null while open: the first good slot of the recovery
    first_error_kind text, first_error text,
    last_error_kind  text, last_error text,
    failed_checks    integer NOT NULL,
    reminders        integer NOT NULL DEFAULT 0, -- reminder notices written so far
    last_notice_at   timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX incident_one_open ON incident (url_id) WHERE ended_at IS NULL;
CREATE INDEX incident_url_idx ON incident (url_id, started_at);

-- The outbox: one row per (event, channel), written in the transaction that decided the event;
-- the notifier claims rows with a lease, sends outside any transaction, and marks them sent
-- with a compare-and-swap on the lease. UNIQUE (key, channel): an event is queued once per
-- channel however many hosts decide it (certificate expiry seen by three hosts).
CREATE TABLE alert_outbox (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key              text NOT NULL,              -- idempotency key: incident id + kind + sequence
    channel          text NOT NULL,
    url_id           bigint NOT NULL,
    incident_id      bigint,
    kind             text NOT NULL CHECK (kind IN ('down', 'up', 'reminder', 'cert_expiring', 'flapping')),
    detail           jsonb NOT NULL,             -- what the message says (rendered at send time)
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sending', 'sent', 'dead')),
    attempts         integer NOT NULL DEFAULT 0,
    available_at     timestamptz NOT NULL DEFAULT now(),   -- claimable from: now, retry time, lease expiry
    lease_owner      text,
    lease_expires_at timestamptz,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz,
    UNIQUE (key, channel)
);
CREATE INDEX alert_outbox_claim_idx ON alert_outbox (available_at) WHERE status IN ('pending', 'sending');
CREATE INDEX alert_outbox_dead_idx ON alert_outbox (url_id) WHERE status = 'dead';

-- Silences: URL or glob (stored also as a LIKE pattern). ended (set once, by the first notifier
-- to see it over) triggers the "state differs from the last notice" check.
CREATE TABLE silence (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pattern     text NOT NULL,
    like_pattern text NOT NULL,
    starts_at   timestamptz NOT NULL DEFAULT now(),
    ends_at     timestamptz NOT NULL,
    reason      text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    settled     boolean NOT NULL DEFAULT false
);
CREATE INDEX silence_active_idx ON silence (ends_at) WHERE NOT settled;

-- Each host's own network, as seen by probing alerts.connectivity_url: while it fails, that
-- host's failed results count toward no incident.
CREATE TABLE alert_host (
    host            text PRIMARY KEY,
    connectivity_ok boolean NOT NULL,
    checked_at      timestamptz NOT NULL
);

-- One recorded result, as complete_tasks hands it over.
CREATE TYPE alert_result AS (
    url_id bigint, slot timestamptz, ok boolean, error_kind text, error text, cert_days_left integer,
    checked_by text
);

-- Nagios' percent state change over a window of up to 21 outcomes (bit 0 newest): each of the
-- 20 possible changes weighs from 1.2 (newest) down to 0.8 (oldest). Pure bit arithmetic, so
-- the planner inlines it (no FROM): sum of weights = 1.2 * changes - 0.4/19 * (sum of change positions),
-- and the sum of positions is read off five masks (bit b of the position).
CREATE FUNCTION alert_flap_changes(bits integer, len integer) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (bits # (bits >> 1)) & ((1 << greatest(least(len, 21) - 1, 0)) - 1)
$$;
CREATE FUNCTION alert_flap_percent(bits integer, len integer) RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (1.2 * bit_count(alert_flap_changes(bits, len)::bit(32))
            - 0.4 / 19 * (bit_count((alert_flap_changes(bits, len) & 699050)::bit(32))
                          + 2 * bit_count((alert_flap_changes(bits, len) & 838860)::bit(32))
                          + 4 * bit_count((alert_flap_changes(bits, len) & 61680)::bit(32))
                          + 8 * bit_count((alert_flap_changes(bits, len) & 65280)::bit(32))
                          + 16 * bit_count((alert_flap_changes(bits, len) & 983040)::bit(32)))) * 100.0 / 20
$$;

-- Apply a batch of recorded results to url_state, incidents and flapping/certificate state;
-- returns the notices to queue (the caller inserts them into alert_outbox). One set-based
-- statement per round; a round applies each URL's oldest result not yet applied, so a URL
-- with several slots in one batch (a consumer flushing after a database outage) takes one
-- round per slot, in slot order. Rows are locked in url_id order first: consumers on many
-- hosts serialise per URL and never deadlock. Results for a slot older than last_slot, 'lost'
-- slots, and failures seen from a host whose own network is down change nothing.
CREATE FUNCTION alert_apply_results(results alert_result[], default_failure integer,
                                    default_success integer, default_channels text[])
RETURNS TABLE (key text, channel text, url_id bigint, incident_id bigint, kind text, detail jsonb)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    rounds integer;
    offline text[];
    silenced text[];
BEGIN
    IF results IS NULL OR cardinality(results) = 0 THEN
        RETURN;
    END IF;
    SELECT max(n) INTO rounds FROM (SELECT count(*) AS n FROM unnest(results) r GROUP BY r.url_id) AS per_url;
    -- a verdict older than five minutes is not trusted (that host's notifier is gone)
    offline := ARRAY(SELECT host FROM alert_host WHERE NOT connectivity_ok
                                                   AND checked_at > now() - interval '5 minutes');
    silenced := ARRAY(SELECT like_pattern FROM silence WHERE starts_at <= now() AND ends_at > now());
    PERFORM 1 FROM url_state s WHERE s.url_id = ANY (ARRAY(SELECT r.url_id FROM unnest(results) r))
        ORDER BY s.url_id FOR UPDATE;
    FOR round IN 1 .. rounds LOOP
        RETURN QUERY
        WITH streak AS (
            -- each URL's oldest result not applied yet, with its state row (one index probe each)
            SELECT DISTINCT ON (r.url_id)
                   r.*, s.state AS old_state, s.incident_id AS old_incident, s.notified_state, s.flapping,
                   s.flap_bits, s.flap_len, s.flap_seq, s.cert_seq, s.cert_notified,
                   u.url, coalesce(u.failure_threshold, default_failure) AS failure_threshold,
                   coalesce(u.success_threshold, default_success) AS success_threshold,
                   coalesce(u.notify, default_channels) AS channels,
                   u.url LIKE ANY (silenced) AS silenced,
                   CASE WHEN r.ok THEN 0 ELSE s.fail_streak + 1 END AS fail_streak,
                   CASE WHEN r.ok THEN s.ok_streak + 1 ELSE 0 END AS ok_streak,
                   CASE WHEN (r.ok AND s.ok_streak > 0) OR (NOT r.ok AND s.fail_streak > 0)
                        THEN s.streak_since ELSE r.slot END AS streak_since,
                   CASE WHEN r.ok THEN NULL WHEN s.fail_streak > 0 THEN s.streak_error_kind
                        ELSE r.error_kind END AS streak_error_kind,
                   CASE WHEN r.ok THEN NULL WHEN s.fail_streak > 0 THEN s.streak_error
                        ELSE r.error END AS streak_error,
                   ((s.flap_bits << 1) | (NOT r.ok)::integer) & 2097151 AS new_flap_bits,
                   least(s.flap_len + 1, 21) AS new_flap_len,
                   r.cert_days_left IS NOT NULL AND s.cert_days_left IS NOT NULL
                       AND r.cert_days_left > s.cert_days_left + 1 AS renewed
            FROM unnest(results) r JOIN url_state s ON s.url_id = r.url_id JOIN url u ON u.id = r.url_id
            WHERE (s.last_slot IS NULL OR r.slot > s.last_slot)
              AND r.error_kind IS DISTINCT FROM 'lost'
              AND (r.ok OR split_part(r.checked_by, ':', 1) <> ALL (offline))
            ORDER BY r.url_id, r.slot
        ), decided AS (
            SELECT st.*,
                   CASE WHEN st.old_state <> 'down' AND st.fail_streak >= st.failure_threshold THEN 'down'
                        WHEN st.old_state <> 'up' AND st.ok_streak >= st.success_threshold THEN 'up'
                        ELSE st.old_state END AS new_state,
                   CASE WHEN NOT st.flapping AND alert_flap_percent(st.new_flap_bits, st.new_flap_len) >= 20 THEN true
                        WHEN st.flapping AND alert_flap_percent(st.new_flap_bits, st.new_flap_len) < 5 THEN false
                        ELSE st.flapping END AS new_flapping,
                   CASE WHEN st.renewed THEN st.cert_seq + 1 ELSE st.cert_seq END AS new_cert_seq,
                   CASE WHEN st.cert_days_left <= 1 THEN 1 WHEN st.cert_days_left <= 7 THEN 7
                        WHEN st.cert_days_left <= 14 THEN 14 WHEN st.cert_days_left <= 30 THEN 30
                   END AS cert_threshold
            FROM streak st
        ), events AS (
            SELECT d.*,
                   d.new_state = 'down' AND d.old_state <> 'down' AS went_down,
                   d.new_state = 'up' AND d.old_state = 'down' AS went_up,
                   d.cert_threshold IS NOT NULL AND d.cert_threshold
                       < coalesce(CASE WHEN d.renewed THEN NULL ELSE d.cert_notified END, 2147483647) AS cert_crossed
            FROM decided d
        ), opened AS (
            INSERT INTO incident (url_id, url, started_at, first_error_kind, first_error, last_error_kind,
                                  last_error, failed_checks)
            SELECT e.url_id, alert_redact_url(e.url), e.streak_since, e.streak_error_kind, e.streak_error, e.error_kind, e.error,
                   e.fail_streak
            FROM events e WHERE e.went_down
            -- Defensive: an open incident left behind (a hand edit) is adopted, never a unique
            -- violation that would fail every result batch.
            ON CONFLICT (url_id) WHERE ended_at IS NULL DO UPDATE SET
                last_error_kind = EXCLUDED.last_error_kind, last_error = EXCLUDED.last_error
            RETURNING incident.id, incident.url_id, incident.started_at
        ), moved AS (
            UPDATE incident SET
                failed_checks = incident.failed_checks + (NOT e.ok)::integer,
                last_error_kind = CASE WHEN e.ok THEN incident.last_error_kind ELSE e.error_kind END,
                last_error = CASE WHEN e.ok THEN incident.last_error ELSE e.error END,
                ended_at = CASE WHEN e.went_up THEN e.streak_since END
            FROM events e
            WHERE incident.id = e.old_incident AND e.old_state = 'down' AND (NOT e.ok OR e.went_up)
            RETURNING incident.id, incident.url_id, incident.started_at, incident.ended_at, incident.failed_checks
        ), notice AS (
            -- down / up, unless silenced or flapping (flapping announces itself, below)
            SELECT e.url_id, o.id AS incident_id, 'down' AS kind, 'incident:' || o.id || ':down' AS key,
                   e.channels, jsonb_build_object('url', alert_redact_url(e.url), 'error_kind', e.streak_error_kind,
                       'error', e.streak_error, 'since', o.started_at, 'failed_checks', e.fail_streak) AS detail,
                   NOT e.silenced AND NOT e.new_flapping AS send
            FROM events e JOIN opened o ON o.url_id = e.url_id
            UNION ALL
            SELECT e.url_id, m.id, 'up', 'incident:' || m.id || ':up', e.channels,
                   jsonb_build_object('url', alert_redact_url(e.url), 'since', m.started_at, 'ended_at', m.ended_at,
                       'down_seconds', extract(epoch FROM m.ended_at - m.started_at),
                       'failed_checks', m.failed_checks),
                   NOT e.silenced AND NOT e.new_flapping
            FROM events e JOIN moved m ON m.url_id = e.url_id
            WHERE e.went_up
            UNION ALL
            SELECT e.url_id, e.old_incident, 'flapping',
                   'flapping:' || e.url_id || ':' || (e.flap_seq + e.new_flapping::integer) || ':'
                       || CASE WHEN e.new_flapping THEN 'start' ELSE 'stop' END,
                   e.channels, jsonb_build_object('url', alert_redact_url(e.url), 'flapping', e.new_flapping, 'state', e.new_state,
                       'percent', round(alert_flap_percent(e.new_flap_bits, e.new_flap_len)::numeric, 1)),
                   NOT e.silenced
            FROM events e WHERE e.new_flapping <> e.flapping
            UNION ALL
            SELECT e.url_id, NULL, 'cert_expiring',
                   'cert:' || e.url_id || ':' || e.new_cert_seq || ':' || e.cert_threshold, e.channels,
                   jsonb_build_object('url', alert_redact_url(e.url), 'days_left', e.cert_days_left, 'threshold', e.cert_threshold),
                   NOT e.silenced
            FROM events e WHERE e.cert_crossed
        ), saved AS (
            UPDATE url_state s SET
                state = e.new_state,
                since = CASE WHEN e.new_state <> e.old_state THEN e.streak_since ELSE s.since END,
                last_slot = e.slot,
                fail_streak = e.fail_streak, ok_streak = e.ok_streak, streak_since = e.streak_since,
                streak_error_kind = e.streak_error_kind, streak_error = e.streak_error,
                incident_id = CASE WHEN e.went_down THEN (SELECT o.id FROM opened o WHERE o.url_id = e.url_id)
                                   WHEN e.went_up THEN NULL ELSE s.incident_id END,
                -- the state last announced: a down/up notice sent, or flapping settling
                notified_state = CASE
                    WHEN e.silenced THEN s.notified_state
                    WHEN e.flapping AND NOT e.new_flapping THEN e.new_state
                    WHEN (e.went_down OR e.went_up) AND NOT e.new_flapping THEN e.new_state
                    ELSE s.notified_state END,
                flap_bits = e.new_flap_bits, flap_len = e.new_flap_len, flapping = e.new_flapping,
                flap_seq = e.flap_seq + (e.new_flapping AND NOT e.flapping)::integer,
                cert_days_left = coalesce(e.cert_days_left, s.cert_days_left),
                cert_seq = e.new_cert_seq,
                cert_notified = CASE WHEN e.cert_crossed THEN e.cert_threshold
                                     WHEN e.renewed THEN NULL ELSE s.cert_notified END,
                updated_at = now()
            FROM events e WHERE s.url_id = e.url_id
            RETURNING s.url_id
        )
        SELECT n.key, c.channel, n.url_id, n.incident_id, n.kind, n.detail
        FROM notice n CROSS JOIN LATERAL unnest(n.channels) AS c (channel)
        WHERE n.send;
    END LOOP;
END $$;
