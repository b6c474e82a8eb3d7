-- Push (heartbeat) monitors' SQL (DESIGN.md section 12, check/push.py for the slot rules,
-- migrations/0011_push.sql for the columns). Each block starts with "-- name: NAME" and a
-- description; db/pushstore.py loads them once.
--
-- Every statement that records a result moves the alert state in the same statement, with
-- alert_apply_results, exactly as complete_tasks does: history, uptime, alerts, badges and the
-- page see a push monitor's slots as any other's. Lock order as elsewhere: url, then url_state.

-- name: add_push
-- Register a push monitor: its first slot starts now, and is missed at now + period + grace; a
-- cron monitor's first slot is its next fire time %(first_slot)s (check/pushcron.py), missed at
-- that + grace. Refused (no row returned) when its identity is taken, as add_url is.
INSERT INTO url (url, name, period, timeout, grace, cron, tz, push_token_hash, push_slot, next_check_at,
                 failure_threshold, success_threshold, notify)
VALUES (%(url)s, %(name)s, %(period)s, %(timeout)s, %(grace)s, %(cron)s, %(tz)s, %(token_hash)s,
        coalesce(%(first_slot)s::timestamptz, now()),
        coalesce(%(first_slot)s::timestamptz + make_interval(secs => %(grace)s),
                 now() + make_interval(secs => %(period)s + %(grace)s)),
        %(failure_threshold)s, %(success_threshold)s, %(notify)s::text[])
ON CONFLICT DO NOTHING
RETURNING id;

-- name: monitor_by_identity
-- The monitor an imported entry is (its name, or for an unnamed one its URL): id and URL.
SELECT id, url FROM url
WHERE CASE WHEN %(name)s::text IS NULL THEN url = %(url)s AND name IS NULL ELSE name = %(name)s END;

-- name: push_names
-- Which of these names are push monitors' (url import refuses to turn one into a checked monitor).
SELECT name FROM url WHERE name = ANY(%(names)s) AND push_slot IS NOT NULL ORDER BY name;

-- name: new_token
-- `url show-token`: the monitor gets a new token (only its hash is kept); the old one stops working.
UPDATE url SET push_token_hash = %(token_hash)s WHERE id = %(id)s AND push_slot IS NOT NULL
RETURNING id;

-- name: ping
-- Jobs' pings, a batch of them in one statement (web/pingwriter.py gathers the pings that
-- arrive together and writes them in one transaction: one round trip and one commit for the
-- batch, not for each ping). For each ping: find the monitor by its token's hash (one index
-- probe), settle the slot the ping covers (check/push.py), move the cursor, record the result
-- and the alert state. A token is at most once in a batch (pushstore.ping_many splits a batch
-- into rounds), so each url row is moved at most once. Signals: 'start', 'success', 'failure'.
-- * The slot settled is the cursor (the oldest slot with no result). When even its deadline has
--   passed (no producer wrote it missed: no `sitewatch run` was running), the ping settles the
--   slot it falls in, and the slots before are skipped and counted, as enqueue_due does after
--   an outage.
-- * A success before the cursor slot starts settles nothing (that slot's success is in);
--   a failure always settles the cursor slot; 'start' settles nothing and opens a run.
-- * next_check_at: when the new cursor slot is missed, or an open run overruns (least()
--   ignores the null of no open run).
-- * The url rows are locked in id order, so two batches (two web listeners) never wait on each
--   other in a cycle.
-- Returns one row per ping, in the batch's order: (its number from 1, the token is a monitor's,
-- a result was recorded, the monitor is a cron one: its ping is pushcron.py's, nothing written).
WITH ping AS (
    SELECT * FROM unnest(%(token_hash)s::bytea[], %(signal)s::text[], %(error_kind)s::text[],
                         %(error)s::text[], %(message)s::text[])
        WITH ORDINALITY AS p(token_hash, signal, error_kind, error, message, n)
), monitor AS (
    SELECT u.id, u.period, u.grace, u.push_slot, u.cron, p.n, p.signal, p.error_kind, p.error, p.message
    FROM url u JOIN ping p ON u.push_token_hash = p.token_hash
    ORDER BY u.id
    FOR UPDATE OF u
), fixed_rate AS (
    SELECT * FROM monitor WHERE cron IS NULL
), settled AS (
    SELECT m.id, m.signal, m.error_kind, m.error, m.message,
           CASE WHEN m.push_slot + make_interval(secs => m.period + m.grace) <= now()
                THEN m.push_slot + floor(extract(epoch FROM now() - m.push_slot) / m.period)
                                   * make_interval(secs => m.period)
                ELSE m.push_slot END AS slot
    FROM fixed_rate m
    WHERE m.signal = 'failure' OR (m.signal = 'success' AND m.push_slot <= now())
), moved AS (
    UPDATE url SET
        push_slot = coalesce(s.slot + make_interval(secs => m.period), url.push_slot),
        push_started_at = CASE WHEN m.signal = 'start' THEN now() END,
        next_check_at = least(coalesce(s.slot + make_interval(secs => m.period), url.push_slot)
                                  + make_interval(secs => m.period + m.grace),
                              CASE WHEN m.signal = 'start' THEN now() + make_interval(secs => m.grace) END),
        skipped_slots = url.skipped_slots
            + CASE WHEN s.slot > url.push_slot
                   THEN floor(extract(epoch FROM s.slot - url.push_slot) / m.period)::bigint ELSE 0 END
    FROM fixed_rate m LEFT JOIN settled s ON s.id = m.id
    WHERE url.id = m.id
    RETURNING url.id
), recorded AS (
    INSERT INTO task_result (url_id, scheduled_at, started_at, ok, error_kind, error, message, attempt,
                             checked_by)
    SELECT s.id, s.slot, now(), s.signal = 'success', s.error_kind, s.error, s.message, 1, %(owner)s
    FROM settled s
    ON CONFLICT (url_id, scheduled_at, region) DO NOTHING
    RETURNING url_id, scheduled_at, ok, error_kind, error, cert_days_left, checked_by, degraded
), alerted AS (
    INSERT INTO alert_outbox (key, channel, url_id, incident_id, kind, detail)
    SELECT * FROM alert_apply_results((SELECT array_agg(ROW(url_id, scheduled_at, ok, error_kind, error,
                                                            cert_days_left, checked_by, degraded)::alert_result)
                                       FROM recorded),
                                      %(failure_threshold)s, %(success_threshold)s, %(channels)s::text[],
                                      %(notify_degraded)s)
    ON CONFLICT (key, channel) DO NOTHING
)
SELECT p.n, m.id IS NOT NULL AS found, EXISTS (SELECT 1 FROM recorded r WHERE r.url_id = m.id) AS recorded,
       coalesce(m.cron IS NOT NULL, false) AS cron
FROM ping p LEFT JOIN monitor m ON m.n = p.n
ORDER BY p.n;

-- name: record_missed
-- The producer's second statement (every host runs it): record each push monitor's slot that
-- passed its deadline with no ping as failed, error_kind 'missed', and move its cursor on; an
-- open /start run past its grace is recorded the same way (it overran). Exactly once across
-- hosts, like enqueue_due: the due url rows are locked FOR UPDATE SKIP LOCKED and their cursor
-- moves in the same statement (a second producer's recheck of next_check_at <= now() then
-- fails), and UNIQUE (url_id, scheduled_at, region) is the last guard. When several slots are overdue
-- (no producer ran), the latest is recorded and the older ones skipped and counted, as
-- enqueue_due does. Fixed-rate monitors only (cron ones: cron_due and cron_settle). Returns
-- (monitors due, results recorded).
WITH due AS (
    SELECT id, period, grace, push_slot, push_started_at,
           -- slots whose deadline passed; at least one (an overrun settles the cursor slot)
           greatest(1, floor(extract(epoch FROM now() - push_slot - make_interval(secs => grace))
                             / period))::bigint AS settled
    FROM url
    WHERE push_slot IS NOT NULL AND next_check_at <= now() AND cron IS NULL   -- cron: cron_due
    ORDER BY next_check_at
    LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
), moved AS (
    UPDATE url SET
        push_slot = d.push_slot + d.settled * make_interval(secs => d.period),
        push_started_at = NULL,
        next_check_at = d.push_slot + (d.settled + 1) * make_interval(secs => d.period)
                        + make_interval(secs => d.grace),
        skipped_slots = url.skipped_slots + d.settled - 1
    FROM due d
    WHERE url.id = ANY (ARRAY(SELECT id FROM due)) AND url.id = d.id
    RETURNING url.id
), recorded AS (
    INSERT INTO task_result (url_id, scheduled_at, started_at, ok, error_kind, error, attempt, checked_by)
    SELECT d.id, d.push_slot + (d.settled - 1) * make_interval(secs => d.period), now(), false, 'missed',
           CASE WHEN d.push_started_at IS NOT NULL AND d.push_started_at + make_interval(secs => d.grace) <= now()
                THEN 'started at ' || to_char(d.push_started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')
                     || ' UTC and no success or failure within the grace of ' || d.grace || ' s'
                ELSE 'no ping within the period and grace (' || d.period || ' s + ' || d.grace || ' s)' END,
           1, %(owner)s
    FROM due d
    ON CONFLICT (url_id, scheduled_at, region) DO NOTHING
    RETURNING url_id, scheduled_at, ok, error_kind, error, cert_days_left, checked_by, degraded
), alerted AS (
    INSERT INTO alert_outbox (key, channel, url_id, incident_id, kind, detail)
    SELECT * FROM alert_apply_results((SELECT array_agg(ROW(url_id, scheduled_at, ok, error_kind, error,
                                                            cert_days_left, checked_by, degraded)::alert_result)
                                       FROM recorded),
                                      %(failure_threshold)s, %(success_threshold)s, %(channels)s::text[],
                                      %(notify_degraded)s)
    ON CONFLICT (key, channel) DO NOTHING
)
SELECT (SELECT count(*) FROM due) AS due, (SELECT count(*) FROM recorded) AS recorded;

-- name: cron_monitor
-- A cron monitor's cursor as a ping finds it (check/pushcron.py decides, cron_settle writes).
SELECT id, cron, tz, grace, push_slot, push_started_at, next_check_at, now()
FROM url WHERE push_token_hash = %(token_hash)s AND cron IS NOT NULL;

-- name: cron_due
-- The cron monitors whose cursor slot is missed (or whose /start run overran): the producer's
-- missed-slot writer reads them, check/pushcron.py decides, cron_settle writes.
SELECT id, cron, tz, grace, push_slot, push_started_at, next_check_at, now()
FROM url
WHERE push_slot IS NOT NULL AND next_check_at <= now() AND cron IS NOT NULL
ORDER BY next_check_at
LIMIT %(batch)s;

-- name: cron_settle
-- Write what check/pushcron.py decided for cron monitors, one row per monitor (arrays, one
-- round trip): move each cursor, record the settled slot (none for /start or an early success)
-- and the alert state, as ping and record_missed do. Exactly once across hosts by
-- compare-and-set: a row moves only if its cursor, deadline and open run are still the values
-- read (seen_*); a host that read them too, or a ping meanwhile, has moved them, so the update
-- finds no row (the caller reads again), and UNIQUE (url_id, scheduled_at, region) is the last guard.
-- Returns (monitors moved, results recorded).
WITH plan AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(seen_slot)s::timestamptz[], %(seen_next)s::timestamptz[],
                         %(seen_started)s::timestamptz[], %(slot)s::timestamptz[], %(cursor)s::timestamptz[],
                         %(next)s::timestamptz[], %(started)s::timestamptz[], %(skipped)s::bigint[],
                         %(ok)s::boolean[], %(error_kind)s::text[], %(error)s::text[], %(message)s::text[])
        AS p(id, seen_slot, seen_next, seen_started, slot, cursor, next, started, skipped, ok, error_kind,
             error, message)
), moved AS (
    UPDATE url SET push_slot = p.cursor, next_check_at = p.next, push_started_at = p.started,
                   skipped_slots = url.skipped_slots + p.skipped
    FROM plan p
    WHERE url.id = p.id AND url.cron IS NOT NULL AND url.push_slot = p.seen_slot
      AND url.next_check_at = p.seen_next AND url.push_started_at IS NOT DISTINCT FROM p.seen_started
    RETURNING url.id, p.slot, p.ok, p.error_kind, p.error, p.message
), recorded AS (
    INSERT INTO task_result (url_id, scheduled_at, started_at, ok, error_kind, error, message, attempt,
                             checked_by)
    SELECT m.id, m.slot, now(), m.ok, m.error_kind, m.error, m.message, 1, %(owner)s
    FROM moved m WHERE m.slot IS NOT NULL
    ON CONFLICT (url_id, scheduled_at, region) DO NOTHING
    RETURNING url_id, scheduled_at, ok, error_kind, error, cert_days_left, checked_by, degraded
), alerted AS (
    INSERT INTO alert_outbox (key, channel, url_id, incident_id, kind, detail)
    SELECT * FROM alert_apply_results((SELECT array_agg(ROW(url_id, scheduled_at, ok, error_kind, error,
                                                            cert_days_left, checked_by, degraded)::alert_result)
                                       FROM recorded),
                                      %(failure_threshold)s, %(success_threshold)s, %(channels)s::text[],
                                      %(notify_degraded)s)
    ON CONFLICT (key, channel) DO NOTHING
)
SELECT (SELECT count(*) FROM moved) AS moved, (SELECT count(*) FROM recorded) AS recorded;
