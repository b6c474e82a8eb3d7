-- Schema version 13's catalog changes: regions (issue 21, DESIGN.md section 12). Run by
-- 0013_regions.py in its short final transaction, after task_result's new key is in place.
--
-- * url.regions: each slot is checked once in each listed region ('{}': by any one host, as
--   before). url.down_when: any | all | majority | N; NULL = alerts.down_when.
-- * task: one row per (url_id, region), region '' for a URL without regions. A host claims
--   its own region's tasks and the '' ones; the claim index leads with region.
-- * url_region_state: each (URL, region)'s state, with the thresholds of url_state.
--   url_state stays one row per URL: for a URL with regions it holds the overall state
--   (down_when over its regions), its incident and its notices; every reader of url_state
--   (status, web, settle_silences) keeps reading one row per URL.
-- * incident.first_region and incident.regions (each region's state and last error).
-- * alert_apply_region_results moves the state for results with a region; results without
--   one go to version 8's alert_apply_results, unchanged (queries.sql complete_tasks).

ALTER TABLE url
    ADD COLUMN regions text[] NOT NULL DEFAULT '{}',
    ADD COLUMN down_when text CHECK (down_when ~ '^(any|all|majority|[1-9][0-9]{0,2})$');

ALTER TABLE task ADD COLUMN region text COLLATE "C" NOT NULL DEFAULT '';   -- "C": see 0013_regions.py
ALTER TABLE task DROP CONSTRAINT task_url_id_key;
-- a URL has at most one task outstanding per region: a slow site cannot pile up work
ALTER TABLE task ADD CONSTRAINT task_url_id_region_key UNIQUE (url_id, region);
DROP INDEX task_available_at_idx;
-- the claim: one range of this index per region claimed (queries.sql claim_tasks)
CREATE INDEX task_available_at_idx ON task (region, available_at);

ALTER TABLE url_state DROP CONSTRAINT url_state_state_check;
ALTER TABLE url_state ADD CONSTRAINT url_state_state_check
    CHECK (state IN ('unknown', 'up', 'degraded', 'partial', 'down'));

-- Rows appear when a region's first result is applied. The key references url_state, not url:
-- the result path already holds url_state's row, and must never need url's key-share lock
-- (0002_alerts.sql: it would deadlock against `url remove`); removing a URL cascades here.
CREATE TABLE url_region_state (
    url_id            bigint NOT NULL REFERENCES url_state (url_id) ON DELETE CASCADE,
    region            text NOT NULL,
    state             text NOT NULL DEFAULT 'unknown' CHECK (state IN ('unknown', 'up', 'degraded', 'down')),
    since             timestamptz,
    last_slot         timestamptz,
    fail_streak       integer NOT NULL DEFAULT 0,
    ok_streak         integer NOT NULL DEFAULT 0,
    degraded_streak   integer NOT NULL DEFAULT 0,
    clean_streak      integer NOT NULL DEFAULT 0,
    streak_since      timestamptz,
    streak_error_kind text,                 -- first error of the current failed streak
    streak_error      text,
    last_error_kind   text,                 -- the latest failure's
    last_error        text,
    updated_at        timestamptz,
    PRIMARY KEY (url_id, region)
) WITH (fillfactor = 50);

ALTER TABLE incident
    ADD COLUMN first_region text,           -- the region whose failures began first
    ADD COLUMN regions jsonb;               -- {region: {state, error_kind, error}}, kept current

-- Absent regions: each host with a region says it is alive (its notifier, every few seconds;
-- keyed by the notifier's owner, host:role:pid, as several hosts may share a machine name).
-- A region whose hosts were all last seen over two periods ago is absent: left out of the
-- quorum (alert_apply_region_results), and announced once per absence (region_absence,
-- alerts/queries.sql announce_absent_regions). A region never seen is not absent: unknown.
CREATE TABLE region_host (
    owner   text PRIMARY KEY,
    region  text NOT NULL,
    seen_at timestamptz NOT NULL
);
CREATE INDEX region_host_region_idx ON region_host (region, seen_at);
CREATE TABLE region_absence (
    region text PRIMARY KEY,
    since  timestamptz NOT NULL            -- its last host's last sign of life
);
-- A region_absent notice is about no URL: url_id 0.
ALTER TABLE alert_outbox DROP CONSTRAINT alert_outbox_kind_check;
ALTER TABLE alert_outbox ADD CONSTRAINT alert_outbox_kind_check
    CHECK (kind IN ('down', 'up', 'reminder', 'cert_expiring', 'flapping', 'removed', 'degraded', 'recovered',
                    'region_absent'));

-- A result with its region, for alert_apply_region_results. alert_result itself is unchanged:
-- results without a region keep going to version 8's alert_apply_results as they are.
CREATE TYPE alert_region_result AS (
    url_id bigint, slot timestamptz, ok boolean, error_kind text, error text, cert_days_left integer,
    checked_by text, degraded boolean, region text
);

-- A partial URL is not down: a silence's end owes it an up, never a down.
CREATE OR REPLACE FUNCTION alert_up_or_down(state text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN state IN ('degraded', 'partial') THEN 'up' ELSE state END
$$;

-- Whether every host of `region` was last seen over `seconds` ago (see region_host).
CREATE FUNCTION alert_region_absent(region text, seconds integer) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT EXISTS (SELECT 1 FROM region_host h WHERE h.region = $1)
       AND NOT EXISTS (SELECT 1 FROM region_host h
                       WHERE h.region = $1 AND h.seen_at > now() - make_interval(secs => $2))
$$;

-- How many of `regions` regions must be down for the URL to be down.
CREATE FUNCTION alert_down_needed(down_when text, regions integer) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN regions < 1 THEN NULL
                WHEN down_when = 'any' THEN 1
                WHEN down_when = 'all' THEN regions
                WHEN down_when = 'majority' THEN regions / 2 + 1
                ELSE least(down_when::integer, regions) END
$$;

-- Results with a region: each moves its (URL, region) state (the same rules as url_state);
-- then each URL touched gets its overall state by down_when: down when enough regions are,
-- partial when some are, else degraded, up or unknown from its regions. Incidents and
-- notices follow the overall state only, and name the regions. Flapping and certificate
-- notices are not derived for URLs with regions.
CREATE FUNCTION alert_apply_region_results(results alert_region_result[], default_failure integer,
                                           default_success integer, default_channels text[],
                                           notify_degraded boolean, default_down_when text)
RETURNS TABLE (key text, channel text, url_id bigint, incident_id bigint, kind text, detail jsonb)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    rounds integer;
    silenced text[];
    stepped alert_region_result[];
BEGIN
    IF results IS NULL OR cardinality(results) = 0 THEN
        RETURN;
    END IF;
    SELECT max(n) INTO rounds
    FROM (SELECT count(*) AS n FROM unnest(results) r GROUP BY r.url_id, r.region) AS per_region;
    silenced := ARRAY(SELECT like_pattern FROM silence WHERE starts_at <= now() AND ends_at > now());
    -- url_state first, in url_id order (the result path's order), then the region rows
    PERFORM 1 FROM url_state s WHERE s.url_id = ANY (ARRAY(SELECT r.url_id FROM unnest(results) r))
        ORDER BY s.url_id FOR UPDATE;
    INSERT INTO url_region_state (url_id, region)
    SELECT DISTINCT r.url_id, r.region FROM unnest(results) r
    WHERE EXISTS (SELECT 1 FROM url_state s WHERE s.url_id = r.url_id)
    ORDER BY 1, 2
    ON CONFLICT DO NOTHING;
    FOR round IN 1 .. rounds LOOP
        -- 1. each (URL, region)'s oldest result not applied yet moves that region's state
        WITH streak AS (
            SELECT DISTINCT ON (r.url_id, r.region)
                   r.*, rs.state AS old_state,
                   coalesce(u.failure_threshold, default_failure) AS failure_threshold,
                   coalesce(u.success_threshold, default_success) AS success_threshold,
                   CASE WHEN r.ok THEN 0 ELSE rs.fail_streak + 1 END AS fail_streak,
                   CASE WHEN r.ok THEN rs.ok_streak + 1 ELSE 0 END AS ok_streak,
                   CASE WHEN r.ok AND r.degraded THEN rs.degraded_streak + 1 ELSE 0 END AS degraded_streak,
                   CASE WHEN r.ok AND NOT coalesce(r.degraded, false) THEN rs.clean_streak + 1 ELSE 0 END
                       AS clean_streak,
                   CASE WHEN (r.ok AND rs.ok_streak > 0) OR (NOT r.ok AND rs.fail_streak > 0)
                        THEN rs.streak_since ELSE r.slot END AS streak_since,
                   CASE WHEN r.ok THEN NULL WHEN rs.fail_streak > 0 THEN rs.streak_error_kind
                        ELSE r.error_kind END AS streak_error_kind,
                   CASE WHEN r.ok THEN NULL WHEN rs.fail_streak > 0 THEN rs.streak_error
                        ELSE r.error END AS streak_error
            FROM unnest(results) r
            JOIN url_region_state rs ON rs.url_id = r.url_id AND rs.region = r.region
            JOIN url u ON u.id = r.url_id
            WHERE (rs.last_slot IS NULL OR r.slot > rs.last_slot)
              AND r.error_kind IS DISTINCT FROM 'lost'
              -- as alert_apply_results: a failure while the checking host was offline counts for nothing
              AND CASE WHEN r.ok THEN true ELSE NOT EXISTS (
                      SELECT 1 FROM alert_host h
                      WHERE h.host = split_part(r.checked_by, ':', 1) AND NOT h.connectivity_ok
                        AND coalesce(h.offline_since, '-infinity') < r.slot + make_interval(secs => u.timeout + 10)
                        AND (h.checked_at > now() - interval '5 minutes' OR h.checked_at > r.slot)
                      UNION ALL
                      SELECT 1 FROM alert_host_outage o
                      WHERE o.host = split_part(r.checked_by, ':', 1)
                        AND o.started_at < r.slot + make_interval(secs => u.timeout + 10) AND o.ended_at > r.slot)
                  END
            ORDER BY r.url_id, r.region, r.slot
        ), decided AS (
            SELECT st.*,
                   CASE WHEN st.old_state <> 'down' AND st.fail_streak >= st.failure_threshold THEN 'down'
                        WHEN st.old_state IN ('unknown', 'up') AND st.degraded_streak >= st.failure_threshold
                            THEN 'degraded'
                        WHEN st.old_state IN ('unknown', 'down') AND st.ok_streak >= st.success_threshold THEN 'up'
                        WHEN st.old_state = 'degraded' AND st.clean_streak >= st.success_threshold THEN 'up'
                        ELSE st.old_state END AS new_state
            FROM streak st
        ), saved AS (
            UPDATE url_region_state rs SET
                state = d.new_state,
                since = CASE WHEN d.new_state <> d.old_state THEN d.streak_since ELSE rs.since END,
                last_slot = d.slot,
                fail_streak = d.fail_streak, ok_streak = d.ok_streak,
                degraded_streak = d.degraded_streak, clean_streak = d.clean_streak,
                streak_since = d.streak_since,
                streak_error_kind = d.streak_error_kind, streak_error = d.streak_error,
                last_error_kind = CASE WHEN d.ok THEN rs.last_error_kind ELSE d.error_kind END,
                last_error = CASE WHEN d.ok THEN rs.last_error ELSE d.error END,
                updated_at = now()
            FROM decided d WHERE rs.url_id = d.url_id AND rs.region = d.region
            RETURNING d.url_id, d.slot, d.ok, d.error_kind, d.error, d.cert_days_left, d.checked_by, d.degraded,
                      d.region
        )
        SELECT array_agg(ROW(s.url_id, s.slot, s.ok, s.error_kind, s.error, s.cert_days_left, s.checked_by,
                             s.degraded, s.region)::alert_region_result)
        INTO stepped FROM saved s;
        IF stepped IS NULL THEN
            CONTINUE;
        END IF;

        -- 2. the overall state of each URL touched (a new statement: it sees step 1's rows)
        RETURN QUERY
        WITH touched AS (
            SELECT t.url_id, max(t.slot) AS slot, count(*) FILTER (WHERE NOT t.ok) AS failed,
                   (array_agg(t.error_kind ORDER BY t.region) FILTER (WHERE NOT t.ok))[1] AS error_kind,
                   (array_agg(t.error ORDER BY t.region) FILTER (WHERE NOT t.ok))[1] AS error
            FROM unnest(stepped) t GROUP BY t.url_id
        ), overall AS (
            SELECT t.*, u.url, s.state AS old_state, s.incident_id AS old_incident, s.notified_state,
                   s.degraded_seq, coalesce(u.notify, default_channels) AS channels,
                   u.url LIKE ANY (silenced) AS silenced,
                   alert_down_needed(coalesce(u.down_when, default_down_when), a.present::integer) AS needed,
                   g.*, a.absent_regions
            FROM touched t JOIN url u ON u.id = t.url_id JOIN url_state s ON s.url_id = t.url_id
            CROSS JOIN LATERAL (
                SELECT coalesce(array_agg(reg.region ORDER BY reg.region) FILTER (WHERE rs.state = 'down'), '{}')
                           AS down_regions,
                       coalesce(array_agg(reg.region ORDER BY reg.region)
                                    FILTER (WHERE rs.state IN ('up', 'degraded')), '{}') AS up_regions,
                       count(*) FILTER (WHERE rs.state = 'degraded') AS degraded_regions,
                       count(*) FILTER (WHERE rs.state = 'up') AS clean_regions,
                       jsonb_object_agg(reg.region, jsonb_build_object(
                           'state', CASE WHEN alert_region_absent(reg.region, 2 * u.period) THEN 'absent'
                                         ELSE coalesce(rs.state, 'unknown') END,
                           'error_kind', rs.last_error_kind, 'error', rs.last_error)) AS regions,
                       (array_agg(rs.region ORDER BY rs.streak_since, rs.region) FILTER (WHERE rs.state = 'down'))[1]
                           AS first_region,
                       (array_agg(rs.streak_error_kind ORDER BY rs.streak_since, rs.region)
                            FILTER (WHERE rs.state = 'down'))[1] AS first_error_kind,
                       (array_agg(rs.streak_error ORDER BY rs.streak_since, rs.region)
                            FILTER (WHERE rs.state = 'down'))[1] AS first_error,
                       min(rs.streak_since) FILTER (WHERE rs.state = 'down') AS down_since,
                       coalesce(sum(rs.fail_streak) FILTER (WHERE rs.state = 'down'), 0) AS down_checks,
                       max(rs.since) FILTER (WHERE rs.state = 'degraded') AS degraded_since
                FROM unnest(u.regions) reg (region)
                LEFT JOIN url_region_state rs ON rs.url_id = u.id AND rs.region = reg.region
                    -- an absent region counts for nothing (its state row is left out)
                    AND NOT alert_region_absent(reg.region, 2 * u.period)
            ) g
            CROSS JOIN LATERAL (
                SELECT count(*) FILTER (WHERE NOT alert_region_absent(reg.region, 2 * u.period)) AS present,
                       coalesce(array_agg(reg.region ORDER BY reg.region)
                                    FILTER (WHERE alert_region_absent(reg.region, 2 * u.period)), '{}')
                           AS absent_regions
                FROM unnest(u.regions) reg (region)
            ) a
            WHERE cardinality(u.regions) > 0
        ), decided AS (
            SELECT o.*,
                   CASE WHEN cardinality(o.down_regions) >= o.needed THEN 'down'
                        WHEN cardinality(o.down_regions) > 0 THEN 'partial'
                        WHEN o.degraded_regions > 0 THEN 'degraded'
                        WHEN o.clean_regions > 0 THEN 'up'
                        ELSE 'unknown' END AS new_state
            FROM overall o
        ), events AS (
            SELECT d.*,
                   d.new_state = 'down' AND d.old_state <> 'down' AS went_down,
                   d.old_state = 'down' AND d.new_state <> 'down' AS went_up,
                   d.new_state = 'degraded' AND d.old_state IN ('unknown', 'up') AS went_degraded,
                   d.new_state = 'up' AND d.old_state = 'degraded' AS recovered
            FROM decided d
        ), opened AS (
            INSERT INTO incident (url_id, url, started_at, first_error_kind, first_error, last_error_kind,
                                  last_error, failed_checks, first_region, regions)
            SELECT e.url_id, alert_redact_url(e.url), e.down_since, e.first_error_kind, e.first_error,
                   coalesce(e.error_kind, e.first_error_kind), coalesce(e.error, e.first_error), e.down_checks,
                   e.first_region, e.regions
            FROM events e WHERE e.went_down
            ON CONFLICT (url_id) WHERE ended_at IS NULL DO UPDATE SET
                last_error_kind = EXCLUDED.last_error_kind, last_error = EXCLUDED.last_error,
                regions = EXCLUDED.regions
            RETURNING incident.id, incident.url_id, incident.started_at
        ), moved AS (
            UPDATE incident SET
                failed_checks = incident.failed_checks + e.failed,
                last_error_kind = coalesce(e.error_kind, incident.last_error_kind),
                last_error = coalesce(e.error, incident.last_error),
                regions = e.regions,
                ended_at = CASE WHEN e.went_up THEN e.slot END
            FROM events e
            WHERE incident.id = e.old_incident AND e.old_state = 'down'
            RETURNING incident.id, incident.url_id, incident.started_at, incident.ended_at,
                      incident.failed_checks, incident.first_region
        ), notice AS (
            SELECT e.url_id, o.id AS incident_id, 'down' AS kind, 'incident:' || o.id || ':down' AS key,
                   e.channels, jsonb_build_object('url', alert_redact_url(e.url), 'error_kind', e.first_error_kind,
                       'error', e.first_error, 'since', o.started_at, 'failed_checks', e.down_checks,
                       'first_region', e.first_region, 'down_regions', to_jsonb(e.down_regions),
                       'up_regions', to_jsonb(e.up_regions), 'absent_regions', to_jsonb(e.absent_regions),
                       'regions', e.regions) AS detail,
                   NOT e.silenced AS send
            FROM events e JOIN opened o ON o.url_id = e.url_id
            UNION ALL
            SELECT e.url_id, m.id, 'up', 'incident:' || m.id || ':up', e.channels,
                   jsonb_build_object('url', alert_redact_url(e.url), 'since', m.started_at, 'ended_at', m.ended_at,
                       'down_seconds', extract(epoch FROM m.ended_at - m.started_at),
                       'failed_checks', m.failed_checks, 'first_region', m.first_region,
                       'down_regions', to_jsonb(e.down_regions), 'up_regions', to_jsonb(e.up_regions),
                       'regions', e.regions),
                   NOT e.silenced
            FROM events e JOIN moved m ON m.url_id = e.url_id
            WHERE e.went_up
            UNION ALL
            SELECT e.url_id, NULL, CASE WHEN e.went_degraded THEN 'degraded' ELSE 'recovered' END,
                   'degraded:' || e.url_id || ':' || (e.degraded_seq + e.went_degraded::integer) || ':'
                       || CASE WHEN e.went_degraded THEN 'start' ELSE 'end' END,
                   e.channels, jsonb_build_object('url', alert_redact_url(e.url), 'error', e.error,
                       'since', e.degraded_since, 'regions', e.regions),
                   NOT e.silenced AND notify_degraded
            FROM events e WHERE e.went_degraded OR e.recovered
        ), saved AS (
            UPDATE url_state s SET
                state = e.new_state,
                since = CASE WHEN e.new_state <> e.old_state THEN coalesce(e.down_since, e.slot) ELSE s.since END,
                last_slot = greatest(s.last_slot, e.slot),
                degraded_seq = e.degraded_seq + e.went_degraded::integer,
                incident_id = CASE WHEN e.went_down THEN (SELECT o.id FROM opened o WHERE o.url_id = e.url_id)
                                   WHEN e.went_up THEN NULL ELSE s.incident_id END,
                notified_state = CASE WHEN e.silenced THEN s.notified_state
                                      WHEN e.went_down OR e.went_up THEN alert_up_or_down(e.new_state)
                                      ELSE s.notified_state END,
                updated_at = now()
            FROM events e WHERE s.url_id = e.url_id
            RETURNING s.url_id
        )
        SELECT n.key, c.channel, n.url_id, n.incident_id, n.kind, n.detail
        FROM notice n CROSS JOIN LATERAL unnest(n.channels) AS c (channel)
        WHERE n.send;
    END LOOP;
END $$;
