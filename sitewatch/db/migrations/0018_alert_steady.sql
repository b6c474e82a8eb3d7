-- Schema version 18: the steady result's alert work, cut short (issues 19 and 23, Performance).
--
-- Nearly every result on a saturated run is "steady": ok, not degraded, no certificate
-- threshold near (none, or more than 30 days left), for a URL already up, neither flapping
-- nor with a failure among its last 21 results (flap_bits = 0), whose last announced state
-- is up. Version 8's alert_apply_results ran each one through its whole statement (streaks,
-- state, incidents, six notice branches, the outbox) to find that nothing but the counters
-- moves. Here such a row only moves its counters, in one UPDATE, with the values version 8
-- computes for it (derived below, term by term); every other row, and every row of a URL
-- with more than one result in the batch (the rounds), goes to version 8's function,
-- renamed alert_apply_changes and unchanged. No data changes: a catalog change only.

ALTER FUNCTION alert_apply_results(alert_result[], integer, integer, text[], boolean)
    RENAME TO alert_apply_changes;

CREATE FUNCTION alert_apply_results(results alert_result[], default_failure integer,
                                    default_success integer, default_channels text[],
                                    notify_degraded boolean DEFAULT true)
RETURNS TABLE (key text, channel text, url_id bigint, incident_id bigint, kind text, detail jsonb)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    steady bigint[];
BEGIN
    IF results IS NULL OR cardinality(results) = 0 THEN
        RETURN;
    END IF;
    -- Every state row of the batch, locked in url_id order first, as alert_apply_changes
    -- does: two consumers writing results of the same URLs never deadlock.
    PERFORM 1 FROM url_state s WHERE s.url_id = ANY (ARRAY(SELECT r.url_id FROM unnest(results) r))
        ORDER BY s.url_id FOR UPDATE;
    -- Version 8 on such a row (state 'up', fail_streak 0 after an ok result, thresholds >= 1
    -- by url's CHECK and default_failure > 0 here): new_state = old_state = 'up', so `since`,
    -- incident_id and the incident stay; no notice (no down/up/degraded/recovered change,
    -- new flap bits 0 so not flapping, cert_threshold null so nothing crossed, notified_state
    -- 'up' so nothing owed); notified_state stays in every branch; cert_seq and cert_notified
    -- stay, cert_known is remembered as version 8 does when nothing crossed.
    WITH single AS (
        -- (a window, not "url_id IN (... HAVING count(*) = 1)": that became a semi join
        -- rescanning the aggregate once per row)
        SELECT * FROM (SELECT r.*, count(*) OVER (PARTITION BY r.url_id) AS results_of_url
                       FROM unnest(results) r) AS r
        WHERE r.results_of_url = 1
          AND r.ok AND NOT coalesce(r.degraded, false) AND (r.cert_days_left IS NULL OR r.cert_days_left > 30)
    ), moved AS (
        UPDATE url_state s SET
            last_slot = r.slot,
            fail_streak = 0, ok_streak = s.ok_streak + 1,
            streak_since = CASE WHEN s.ok_streak > 0 THEN s.streak_since ELSE r.slot END,
            degraded_streak = 0, clean_streak = s.clean_streak + 1,
            streak_error_kind = NULL, streak_error = NULL,
            flap_bits = 0, flap_len = least(s.flap_len + 1, 21),
            cert_days_left = coalesce(r.cert_days_left, s.cert_days_left),
            cert_known = CASE WHEN r.cert_days_left IS NULL THEN s.cert_known ELSE (
                SELECT alert_cert_remember(s.cert_known, c.cert_match, c.cert_expires,
                                           (c.cert_match->>'seq')::integer, (c.cert_match->>'notified')::integer,
                                           extract(epoch FROM r.slot))
                FROM (SELECT x.cert_expires, alert_cert_match(s.cert_known, x.cert_expires) AS cert_match
                      FROM (SELECT extract(epoch FROM r.slot) + r.cert_days_left * 86400.0 AS cert_expires) AS x)
                    AS c) END,
            updated_at = now()
        FROM single r
        WHERE s.url_id = r.url_id AND default_failure > 0
          AND s.state = 'up' AND s.fail_streak = 0 AND s.flap_bits = 0 AND NOT s.flapping
          AND coalesce(s.notified_state, 'up') = 'up'
          AND (s.last_slot IS NULL OR r.slot > s.last_slot)
        RETURNING s.url_id
    )
    SELECT array_agg(moved.url_id) INTO steady FROM moved;
    IF steady IS NULL THEN
        RETURN QUERY SELECT * FROM alert_apply_changes(results, default_failure, default_success,
                                                       default_channels, notify_degraded);
    ELSIF cardinality(steady) < cardinality(results) THEN
        RETURN QUERY SELECT * FROM alert_apply_changes(
            ARRAY(SELECT r::alert_result FROM unnest(results) r
                  WHERE NOT EXISTS (SELECT 1 FROM unnest(steady) AS done (url_id) WHERE done.url_id = r.url_id)),
            default_failure, default_success, default_channels, notify_degraded);
    END IF;
END $$;
