-- Schema version 8: assertions and the degraded state (issue 19, DESIGN.md section 12).
--
-- * url.assertions and url.degraded: the `assert` and `degraded` expressions as the user wrote
--   them (sitewatch/assertions parses them again, cached, when a check is judged).
-- * task_result.degraded: the result passed every assertion but failed a `degraded` one (ok
--   stays true: uptime counts it as up). NULL for results recorded before this version.
-- * url_state gains the state `degraded`: not down, and the last failure_threshold results
--   were all degraded; back to up after success_threshold clean results. Its notices,
--   `degraded` and `recovered`, open no incident (incidents are for down only) and are sent
--   unless alerts.notify_degraded is false (alert_apply_results' new last argument).

ALTER TABLE url
    ADD COLUMN assertions text[] NOT NULL DEFAULT '{}',
    ADD COLUMN degraded text[] NOT NULL DEFAULT '{}';

-- Nullable with no default: a catalog change only, even on a big partitioned table.
ALTER TABLE task_result ADD COLUMN degraded boolean;

ALTER TABLE url_state DROP CONSTRAINT url_state_state_check;
ALTER TABLE url_state ADD CONSTRAINT url_state_state_check
    CHECK (state IN ('unknown', 'up', 'degraded', 'down'));
ALTER TABLE url_state
    ADD COLUMN degraded_streak integer NOT NULL DEFAULT 0,   -- consecutive ok but degraded slots
    ADD COLUMN clean_streak integer NOT NULL DEFAULT 0,      -- consecutive ok and not degraded slots
    ADD COLUMN degraded_seq integer NOT NULL DEFAULT 0;      -- degraded episodes so far (notice keys)

ALTER TABLE alert_outbox DROP CONSTRAINT alert_outbox_kind_check;
ALTER TABLE alert_outbox ADD CONSTRAINT alert_outbox_kind_check
    CHECK (kind IN ('down', 'up', 'reminder', 'cert_expiring', 'flapping', 'removed', 'degraded', 'recovered'));

ALTER TYPE alert_result ADD ATTRIBUTE degraded boolean;

-- notified_state records the last down/up announced; a degraded URL is up as far as that goes
-- (a silence's end owes a down or an up, never a degraded).
CREATE FUNCTION alert_up_or_down(state text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN state = 'degraded' THEN 'up' ELSE state END
$$;

DROP FUNCTION alert_apply_results(alert_result[], integer, integer, text[]);

-- As in 0006_alert_review.sql, plus the degraded streaks, state and notices.
CREATE FUNCTION alert_apply_results(results alert_result[], default_failure integer,
                                    default_success integer, default_channels text[],
                                    notify_degraded boolean DEFAULT true)
RETURNS TABLE (key text, channel text, url_id bigint, incident_id bigint, kind text, detail jsonb)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    rounds integer;
    silenced text[];
BEGIN
    IF results IS NULL OR cardinality(results) = 0 THEN
        RETURN;
    END IF;
    SELECT max(n) INTO rounds FROM (SELECT count(*) AS n FROM unnest(results) r GROUP BY r.url_id) AS per_url;
    silenced := ARRAY(SELECT like_pattern FROM silence WHERE starts_at <= now() AND ends_at > now());
    PERFORM 1 FROM url_state s WHERE s.url_id = ANY (ARRAY(SELECT r.url_id FROM unnest(results) r))
        ORDER BY s.url_id FOR UPDATE;
    FOR round IN 1 .. rounds LOOP
        RETURN QUERY
        WITH streak AS (
            -- each URL's oldest result not applied yet, with its state row (one index probe each)
            SELECT DISTINCT ON (r.url_id)
                   r.*, s.state AS old_state, s.incident_id AS old_incident, s.notified_state, s.flapping,
                   s.flap_bits, s.flap_len, s.flap_seq, s.cert_seq, s.cert_known,
                   extract(epoch FROM r.slot) + r.cert_days_left * 86400.0 AS cert_expires,
                   alert_cert_match(s.cert_known, extract(epoch FROM r.slot) + r.cert_days_left * 86400.0)
                       AS cert_match,
                   u.url, coalesce(u.failure_threshold, default_failure) AS failure_threshold,
                   coalesce(u.success_threshold, default_success) AS success_threshold,
                   coalesce(u.notify, default_channels) AS channels,
                   u.url LIKE ANY (silenced) AS silenced,
                   CASE WHEN r.ok THEN 0 ELSE s.fail_streak + 1 END AS fail_streak,
                   CASE WHEN r.ok THEN s.ok_streak + 1 ELSE 0 END AS ok_streak,
                   CASE WHEN r.ok AND r.degraded THEN s.degraded_streak + 1 ELSE 0 END AS degraded_streak,
                   CASE WHEN r.ok AND NOT coalesce(r.degraded, false) THEN s.clean_streak + 1 ELSE 0 END
                       AS clean_streak,
                   s.degraded_seq,
                   CASE WHEN (r.ok AND s.ok_streak > 0) OR (NOT r.ok AND s.fail_streak > 0)
                        THEN s.streak_since ELSE r.slot END AS streak_since,
                   CASE WHEN r.ok THEN NULL WHEN s.fail_streak > 0 THEN s.streak_error_kind
                        ELSE r.error_kind END AS streak_error_kind,
                   CASE WHEN r.ok THEN NULL WHEN s.fail_streak > 0 THEN s.streak_error
                        ELSE r.error END AS streak_error,
                   ((s.flap_bits << 1) | (NOT r.ok)::integer) & 2097151 AS new_flap_bits,
                   least(s.flap_len + 1, 21) AS new_flap_len
            FROM unnest(results) r JOIN url_state s ON s.url_id = r.url_id JOIN url u ON u.id = r.url_id
            WHERE (s.last_slot IS NULL OR r.slot > s.last_slot)
              AND r.error_kind IS DISTINCT FROM 'lost'
              -- a failure whose check window meets an outage of the host that checked counts
              -- toward nothing; an open outage whose verdict is over five minutes old (that
              -- host's notifier is gone) is taken to have ended then
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
            ORDER BY r.url_id, r.slot
        ), decided AS (
            SELECT st.*,
                   -- degraded (DESIGN.md section 12): not down, and the last failure_threshold
                   -- results all ok but degraded; back to up after success_threshold clean ones.
                   -- A degraded result counts as ok toward leaving down.
                   CASE WHEN st.old_state <> 'down' AND st.fail_streak >= st.failure_threshold THEN 'down'
                        WHEN st.old_state IN ('unknown', 'up') AND st.degraded_streak >= st.failure_threshold
                            THEN 'degraded'
                        WHEN st.old_state IN ('unknown', 'down') AND st.ok_streak >= st.success_threshold THEN 'up'
                        WHEN st.old_state = 'degraded' AND st.clean_streak >= st.success_threshold THEN 'up'
                        ELSE st.old_state END AS new_state,
                   CASE WHEN NOT st.flapping AND alert_flap_percent(st.new_flap_bits, st.new_flap_len) >= 20 THEN true
                        WHEN st.flapping AND alert_flap_percent(st.new_flap_bits, st.new_flap_len) < 5 THEN false
                        ELSE st.flapping END AS new_flapping,
                   coalesce((st.cert_match->>'seq')::integer, st.cert_seq) AS cert_key_seq,
                   CASE WHEN st.cert_days_left <= 1 THEN 1 WHEN st.cert_days_left <= 7 THEN 7
                        WHEN st.cert_days_left <= 14 THEN 14 WHEN st.cert_days_left <= 30 THEN 30
                   END AS cert_threshold
            FROM streak st
        ), events AS (
            SELECT d.*,
                   d.new_state = 'down' AND d.old_state <> 'down' AS went_down,
                   d.new_state = 'up' AND d.old_state = 'down' AS went_up,
                   d.new_state = 'degraded' AND d.old_state <> 'degraded' AS went_degraded,
                   d.new_state = 'up' AND d.old_state = 'degraded' AS recovered,
                   d.cert_threshold IS NOT NULL AND d.cert_threshold
                       < coalesce((d.cert_match->>'notified')::integer, 2147483647) AS cert_crossed,
                   -- Owed (B7): not silenced (any more), no change and no flapping in this round,
                   -- yet the state differs from the last one announced. A write that began inside
                   -- a silence and committed after the notifier's settle sweep leaves exactly this.
                   NOT d.silenced AND NOT d.flapping AND NOT d.new_flapping AND d.new_state <> 'unknown'
                       AND d.new_state = d.old_state
                       AND alert_up_or_down(d.new_state) <> coalesce(d.notified_state, 'up') AS owed
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
                   'cert:' || e.url_id || ':' || e.cert_key_seq || ':' || e.cert_threshold, e.channels,
                   jsonb_build_object('url', alert_redact_url(e.url), 'days_left', e.cert_days_left, 'threshold', e.cert_threshold),
                   NOT e.silenced
            FROM events e WHERE e.cert_crossed
            UNION ALL
            -- degraded / recovered: no incident; one key per episode (degraded_seq)
            SELECT e.url_id, NULL, CASE WHEN e.went_degraded THEN 'degraded' ELSE 'recovered' END,
                   'degraded:' || e.url_id || ':' || (e.degraded_seq + e.went_degraded::integer) || ':'
                       || CASE WHEN e.went_degraded THEN 'start' ELSE 'end' END,
                   e.channels, jsonb_build_object('url', alert_redact_url(e.url), 'error', e.error,
                       'since', e.streak_since, 'degraded_checks', e.degraded_streak),
                   NOT e.silenced AND NOT e.new_flapping AND notify_degraded
            FROM events e WHERE e.went_degraded OR e.recovered
            UNION ALL
            -- the notice a silence's end owed, as settle_silences (alerts/queries.sql) words it
            -- and with its key: whichever writes it first, the other is a no-op
            SELECT e.url_id, i.id, alert_up_or_down(e.new_state),
                   'incident:' || i.id || ':' || alert_up_or_down(e.new_state), e.channels,
                   CASE WHEN e.new_state = 'down'
                        THEN jsonb_build_object('url', alert_redact_url(e.url), 'error_kind', i.first_error_kind,
                                                'error', i.first_error, 'since', i.started_at,
                                                'failed_checks', i.failed_checks, 'after_silence', true)
                        ELSE jsonb_build_object('url', alert_redact_url(e.url), 'since', i.started_at,
                                                'ended_at', i.ended_at,
                                                'down_seconds', extract(epoch FROM i.ended_at - i.started_at),
                                                'failed_checks', i.failed_checks, 'after_silence', true) END,
                   true
            FROM events e
            JOIN LATERAL (SELECT * FROM incident WHERE incident.url_id = e.url_id
                          ORDER BY started_at DESC LIMIT 1) i ON true
            WHERE e.owed
        ), saved AS (
            UPDATE url_state s SET
                state = e.new_state,
                since = CASE WHEN e.new_state <> e.old_state THEN e.streak_since ELSE s.since END,
                last_slot = e.slot,
                fail_streak = e.fail_streak, ok_streak = e.ok_streak, streak_since = e.streak_since,
                degraded_streak = e.degraded_streak, clean_streak = e.clean_streak,
                degraded_seq = e.degraded_seq + e.went_degraded::integer,
                streak_error_kind = e.streak_error_kind, streak_error = e.streak_error,
                incident_id = CASE WHEN e.went_down THEN (SELECT o.id FROM opened o WHERE o.url_id = e.url_id)
                                   WHEN e.went_up THEN NULL ELSE s.incident_id END,
                -- the state last announced: a down/up notice sent, or flapping settling
                notified_state = CASE
                    WHEN e.silenced THEN s.notified_state
                    WHEN e.owed THEN alert_up_or_down(e.new_state)
                    WHEN e.flapping AND NOT e.new_flapping THEN alert_up_or_down(e.new_state)
                    WHEN (e.went_down OR e.went_up) AND NOT e.new_flapping THEN e.new_state
                    ELSE s.notified_state END,
                flap_bits = e.new_flap_bits, flap_len = e.new_flap_len, flapping = e.new_flapping,
                flap_seq = e.flap_seq + (e.new_flapping AND NOT e.flapping)::integer,
                cert_days_left = coalesce(e.cert_days_left, s.cert_days_left),
                cert_seq = e.cert_seq + (e.cert_crossed AND e.cert_match->>'seq' IS NULL)::integer,
                cert_notified = CASE WHEN e.cert_crossed THEN e.cert_threshold ELSE s.cert_notified END,
                cert_known = CASE WHEN e.cert_days_left IS NULL THEN s.cert_known
                    ELSE alert_cert_remember(s.cert_known, e.cert_match, e.cert_expires,
                        CASE WHEN e.cert_crossed THEN e.cert_key_seq ELSE (e.cert_match->>'seq')::integer END,
                        CASE WHEN e.cert_crossed THEN e.cert_threshold ELSE (e.cert_match->>'notified')::integer END,
                        extract(epoch FROM e.slot)) END,
                updated_at = now()
            FROM events e WHERE s.url_id = e.url_id
            RETURNING s.url_id
        )
        SELECT n.key, c.channel, n.url_id, n.incident_id, n.kind, n.detail
        FROM notice n CROSS JOIN LATERAL unnest(n.channels) AS c (channel)
        WHERE n.send;
    END LOOP;
END $$;
