-- Schema version 16: confirmation checks for URLs with regions (issue 21, DESIGN.md section 12;
-- the design is told in sitewatch/regions/confirm.py).
--
-- When a URL's check first fails in one of its regions (the (URL, region)'s state goes from
-- up, unknown or degraded to failing: the first failure of a streak), each of its present
-- regions checks it at once instead of waiting for its next slot: a task per region, in the
-- result's transaction, claimable now. The failing region re-checks too: with
-- failure_threshold 2, a real outage is down a few seconds after its first failed slot
-- (about one period after it began), not failure_threshold periods later; a blip that the
-- re-check does not see ends its streak.
--
-- * A confirmation is a check of its own: its task's scheduled_at is when it was asked for
--   (never a slot of the URL's schedule, so the key (url_id, scheduled_at, region) of a
--   regular slot is never taken), its result counts toward its region's threshold as a
--   regular one does, and uptime and history count it as one more check at that time.
-- * At most one confirmation per URL and region per period: only a regular slot's failure
--   asks (a confirmation that fails asks no one, though it may start its region's streak),
--   url_region_state.confirm_slot is the failed slot that last asked a region, and that
--   region is asked again only by a failed slot at least one period later.
-- * A region with a task outstanding for the URL (its slot not checked yet, or a confirmation)
--   is not asked: it checks soon anyway, and is asked by a later first failure of the period
--   once its task is done. Task's UNIQUE (url_id, region) keeps one task per region, claimed
--   by one host however many the region has. An absent region is not asked (nobody would
--   claim it).
-- * Also (not a confirmation): certificate notices for URLs with regions, from the certificate
--   nearest expiry that a region saw, as alert_apply_results gives them for other URLs.
-- * Regions off cost nothing: alert_apply_region_results is called only for batches with
--   regional results, and a result that is not a first failure pays one FILTER.

-- The failed slot that last asked this region for a confirmation (null: never).
ALTER TABLE url_region_state ADD COLUMN confirm_slot timestamptz;

-- Enqueue confirmations for the URLs whose streak of failures began (url_ids, with the slot
-- and region of that first failure). Called by alert_apply_region_results, which holds these
-- URLs' url_state rows (so their url_region_state rows too). Returns the tasks enqueued.
--
-- Locks: a task's foreign key takes a KEY SHARE lock on its url row, and the result path must
-- never wait for one: the producer and `url remove` hold url rows FOR UPDATE while they may
-- wait for task rows this transaction has deleted (queries.sql lock_removed_url). So the url
-- rows are locked first, SKIP LOCKED: a URL whose row is held is being given a new slot or
-- being removed, and needs no confirmation. The insert is a statement of its own: its
-- snapshot, taken after those locks, sees every task that exists (one another consumer is
-- deleting is still seen, and skipped by NOT EXISTS rather than waited for on the unique key).
CREATE FUNCTION alert_confirm_regions(url_ids bigint[], slots timestamptz[], failed_regions text[])
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    lockable bigint[];
    enqueued integer;
BEGIN
    lockable := ARRAY(SELECT u.id FROM url u WHERE u.id = ANY (url_ids) ORDER BY u.id FOR KEY SHARE SKIP LOCKED);
    IF cardinality(lockable) = 0 THEN
        RETURN 0;
    END IF;
    WITH asking AS (
        -- one per URL: its earliest first failure in this call (the region's name breaks a tie)
        SELECT DISTINCT ON (f.url_id) f.url_id, f.slot, u.period, u.next_check_at, u.regions
        FROM unnest(url_ids, slots, failed_regions) AS f (url_id, slot, region)
        JOIN url u ON u.id = f.url_id
        WHERE f.url_id = ANY (lockable) AND EXISTS (SELECT 1 FROM url_state s WHERE s.url_id = f.url_id)
          -- a slot of the URL's schedule (t0 + kP): a confirmation's failure asks no one
          AND mod(floor(extract(epoch FROM f.slot - u.next_check_at) * 1000000)::bigint,
                  u.period::bigint * 1000000) = 0
        ORDER BY f.url_id, f.slot, f.region
    ), wanted AS (
        SELECT a.url_id, a.slot, r.region, r.n,
               -- now, unless now is exactly one of the URL's slots (t0 + kP, to the microsecond)
               now() + CASE WHEN mod(floor(extract(epoch FROM now() - a.next_check_at) * 1000000)::bigint,
                                     a.period::bigint * 1000000) = 0
                            THEN interval '1 microsecond' ELSE interval '0' END AS scheduled_at
        FROM asking a
        CROSS JOIN LATERAL unnest(a.regions) WITH ORDINALITY AS r (region, n)
        LEFT JOIN url_region_state rs ON rs.url_id = a.url_id AND rs.region = r.region
        WHERE (rs.confirm_slot IS NULL OR a.slot >= rs.confirm_slot + make_interval(secs => a.period))
          AND NOT alert_region_absent(r.region, 2 * a.period)
          AND NOT EXISTS (SELECT 1 FROM task t WHERE t.url_id = a.url_id AND t.region = r.region)
    ), asked AS (
        INSERT INTO task (url_id, scheduled_at, available_at, region)
        SELECT w.url_id, w.scheduled_at, now(), w.region FROM wanted w
        ORDER BY w.url_id, w.n            -- the producer's order (enqueue_due)
        ON CONFLICT (url_id, region) DO NOTHING
        RETURNING url_id, region
    ), marked AS (
        INSERT INTO url_region_state (url_id, region, confirm_slot)
        SELECT w.url_id, w.region, w.slot FROM wanted w JOIN asked k ON k.url_id = w.url_id AND k.region = w.region
        ORDER BY 1, 2
        ON CONFLICT (url_id, region) DO UPDATE SET confirm_slot = EXCLUDED.confirm_slot
    )
    SELECT count(*) INTO enqueued FROM asked;
    IF enqueued > 0 THEN
        PERFORM pg_notify('sitewatch_task', '');     -- wake the consumers, as the producer does
    END IF;
    RETURN enqueued;
END $$;

-- Results with a region: each moves its (URL, region) state (the same rules as url_state);
-- then each URL touched gets its overall state by down_when: down when enough regions are,
-- partial when some are, else degraded, up or unknown from its regions. Incidents and
-- notices follow the overall state only, and name the regions. Flapping is not derived for
-- URLs with regions. Version 16: the first failures of a streak are collected and ask for
-- confirmations (alert_confirm_regions) once every state has moved; and certificate notices,
-- as alert_apply_results gives them, from the certificate nearest expiry a region saw.
CREATE OR REPLACE FUNCTION alert_apply_region_results(results alert_region_result[], default_failure integer,
                                           default_success integer, default_channels text[],
                                           notify_degraded boolean, default_down_when text)
RETURNS TABLE (key text, channel text, url_id bigint, incident_id bigint, kind text, detail jsonb)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    rounds integer;
    silenced text[];
    stepped alert_region_result[];
    -- each (URL, region) whose failed streak began in this call: it may ask for confirmations
    first_urls bigint[] := '{}';
    first_slots timestamptz[] := '{}';
    first_regions text[] := '{}';
    round_urls bigint[];
    round_slots timestamptz[];
    round_regions text[];
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
                      d.region,
                      -- the first failure of a streak in a region that is not down: up (or
                      -- unknown, degraded) to failing
                      NOT d.ok AND d.fail_streak = 1 AND d.old_state <> 'down' AS first_failure
        )
        SELECT array_agg(ROW(s.url_id, s.slot, s.ok, s.error_kind, s.error, s.cert_days_left, s.checked_by,
                             s.degraded, s.region)::alert_region_result),
               array_agg(s.url_id) FILTER (WHERE s.first_failure),
               array_agg(s.slot) FILTER (WHERE s.first_failure),
               array_agg(s.region) FILTER (WHERE s.first_failure)
        INTO stepped, round_urls, round_slots, round_regions FROM saved s;
        IF stepped IS NULL THEN
            CONTINUE;
        END IF;
        IF round_urls IS NOT NULL THEN
            first_urls := first_urls || round_urls;
            first_slots := first_slots || round_slots;
            first_regions := first_regions || round_regions;
        END IF;

        -- 2. the overall state of each URL touched (a new statement: it sees step 1's rows)
        RETURN QUERY
        WITH touched AS (
            SELECT t.url_id, max(t.slot) AS slot, count(*) FILTER (WHERE NOT t.ok) AS failed,
                   (array_agg(t.error_kind ORDER BY t.region) FILTER (WHERE NOT t.ok))[1] AS error_kind,
                   (array_agg(t.error ORDER BY t.region) FILTER (WHERE NOT t.ok))[1] AS error,
                   -- the certificate closest to expiry that a region saw (a CDN may serve several)
                   min(t.cert_days_left) AS cert_days_left,
                   (array_agg(t.slot ORDER BY t.cert_days_left) FILTER (WHERE t.cert_days_left IS NOT NULL))[1]
                       AS cert_slot
            FROM unnest(stepped) t GROUP BY t.url_id
        ), overall AS (
            SELECT t.*, u.url, s.state AS old_state, s.incident_id AS old_incident, s.notified_state,
                   s.degraded_seq, coalesce(u.notify, default_channels) AS channels,
                   s.cert_seq, s.cert_known,
                   extract(epoch FROM t.cert_slot) + t.cert_days_left * 86400.0 AS cert_expires,
                   alert_cert_match(s.cert_known, extract(epoch FROM t.cert_slot) + t.cert_days_left * 86400.0)
                       AS cert_match,
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
                        ELSE 'unknown' END AS new_state,
                   -- certificates as alert_apply_results (0008): a notice per threshold crossed
                   -- per certificate
                   coalesce((o.cert_match->>'seq')::integer, o.cert_seq) AS cert_key_seq,
                   CASE WHEN o.cert_days_left <= 1 THEN 1 WHEN o.cert_days_left <= 7 THEN 7
                        WHEN o.cert_days_left <= 14 THEN 14 WHEN o.cert_days_left <= 30 THEN 30
                   END AS cert_threshold
            FROM overall o
        ), events AS (
            SELECT d.*,
                   d.new_state = 'down' AND d.old_state <> 'down' AS went_down,
                   d.old_state = 'down' AND d.new_state <> 'down' AS went_up,
                   d.new_state = 'degraded' AND d.old_state IN ('unknown', 'up') AS went_degraded,
                   d.new_state = 'up' AND d.old_state = 'degraded' AS recovered,
                   d.cert_threshold IS NOT NULL AND d.cert_threshold
                       < coalesce((d.cert_match->>'notified')::integer, 2147483647) AS cert_crossed
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
            UNION ALL
            SELECT e.url_id, NULL, 'cert_expiring',
                   'cert:' || e.url_id || ':' || e.cert_key_seq || ':' || e.cert_threshold, e.channels,
                   jsonb_build_object('url', alert_redact_url(e.url), 'days_left', e.cert_days_left,
                                      'threshold', e.cert_threshold),
                   NOT e.silenced
            FROM events e WHERE e.cert_crossed
        ), saved AS (
            UPDATE url_state s SET
                state = e.new_state,
                since = CASE WHEN e.new_state <> e.old_state THEN coalesce(e.down_since, e.slot) ELSE s.since END,
                last_slot = greatest(s.last_slot, e.slot),
                degraded_seq = e.degraded_seq + e.went_degraded::integer,
                cert_days_left = coalesce(e.cert_days_left, s.cert_days_left),
                cert_seq = e.cert_seq + (e.cert_crossed AND e.cert_match->>'seq' IS NULL)::integer,
                cert_notified = CASE WHEN e.cert_crossed THEN e.cert_threshold ELSE s.cert_notified END,
                cert_known = CASE WHEN e.cert_days_left IS NULL THEN s.cert_known
                    ELSE alert_cert_remember(s.cert_known, e.cert_match, e.cert_expires,
                        CASE WHEN e.cert_crossed THEN e.cert_key_seq ELSE (e.cert_match->>'seq')::integer END,
                        CASE WHEN e.cert_crossed THEN e.cert_threshold ELSE (e.cert_match->>'notified')::integer END,
                        extract(epoch FROM e.slot)) END,
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
    -- 3. confirmations (0016): rare, after every state has moved (a failure, not a result, pays)
    IF cardinality(first_urls) > 0 THEN
        PERFORM alert_confirm_regions(first_urls, first_slots, first_regions);
    END IF;
END $$;
