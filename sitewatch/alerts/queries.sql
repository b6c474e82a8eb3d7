-- The alerts subsystem's SQL (the state update itself lives in migrations/0002_alerts.sql,
-- alert_apply_results, called by complete_tasks). Loaded with db/store.py's loader.

-- name: claim_outbox
-- The notifier's claim, one statement: take notices that are due (new ones,
-- retries whose backoff is over, and ones whose sender's lease expired: recovery lives on the
-- claim path), lease them, and return what the message needs. A notice already tried
-- max_attempts times whose last sender vanished is marked dead instead.
-- A URL's notices reach a channel in order: a notice waits while an older one for the same
-- URL and channel is still pending or being sent (a DOWN retried with backoff goes out
-- before the UP that followed it; a dead one no longer holds the later ones back).
-- Each channel has its own budget of sends in flight (%(rooms)s, room left per channel of
-- %(channels)s; %(other_room)s for channels this host does not know, which then fail): a
-- hanging channel fills its own budget and delays no other channel. A notice for a channel this
-- host does not know is left %(foreign_wait)s seconds from its creation to a host that has it;
-- only then is it taken here, to fail (retried, then dead) rather than wait forever.
WITH budget AS (
    SELECT * FROM unnest(%(channels)s::text[], %(rooms)s::integer[]) AS b (channel, room)
    UNION ALL
    SELECT NULL, %(other_room)s
), candidate AS (
    SELECT c.id FROM budget b CROSS JOIN LATERAL (
        SELECT o.id FROM alert_outbox o
        WHERE o.status IN ('pending', 'sending') AND o.available_at <= now()
          AND (o.channel = b.channel OR (b.channel IS NULL AND o.channel <> ALL (%(channels)s::text[])
                                         AND o.created_at <= now() - make_interval(secs => %(foreign_wait)s)))
          AND NOT EXISTS (SELECT 1 FROM alert_outbox e
                          WHERE e.url_id = o.url_id AND e.channel = o.channel AND e.id < o.id
                            AND e.status IN ('pending', 'sending'))
        ORDER BY o.available_at
        LIMIT greatest(b.room, 0)
        FOR UPDATE SKIP LOCKED) c
), abandoned AS (
    UPDATE alert_outbox SET status = 'dead', lease_owner = NULL,
        last_error = coalesce(last_error || '; ', '') || 'no outcome after ' || attempts
                     || ' attempts (the notifier sending it died or lost its lease)'
    WHERE id = ANY (ARRAY(SELECT id FROM candidate)) AND status = 'sending' AND attempts >= %(max_attempts)s
    RETURNING id
)
UPDATE alert_outbox o SET
    status = 'sending', attempts = o.attempts + 1, lease_owner = %(owner)s,
    lease_expires_at = now() + make_interval(secs => %(lease)s),
    available_at = now() + make_interval(secs => %(lease)s)
WHERE o.id = ANY (ARRAY(SELECT id FROM candidate)) AND o.id NOT IN (SELECT id FROM abandoned)
RETURNING o.id, o.key, o.channel, o.url_id, o.incident_id, o.kind, o.detail, o.attempts, o.created_at;

-- name: mark_sent
-- Compare-and-swap on the lease: only the sender still holding it marks the notice sent.
UPDATE alert_outbox SET status = 'sent', sent_at = now(), lease_owner = NULL, lease_expires_at = NULL
WHERE id = %(id)s AND lease_owner = %(owner)s AND attempts = %(attempts)s AND status = 'sending'
RETURNING id;

-- name: mark_failed
-- The send failed: retry after the backoff, or give up (dead) after max_attempts. Same fence.
UPDATE alert_outbox SET
    status = CASE WHEN attempts >= %(max_attempts)s THEN 'dead' ELSE 'pending' END,
    available_at = now() + make_interval(secs => %(retry_in)s),
    lease_owner = NULL, lease_expires_at = NULL, last_error = %(error)s
WHERE id = %(id)s AND lease_owner = %(owner)s AND attempts = %(attempts)s AND status = 'sending'
RETURNING status;

-- name: record_connectivity
-- This host's own network, as the notifier saw it by checking alerts.connectivity_url. An
-- outage runs from the last good check (checked_at while ok; %(lookback)s seconds back when
-- there is none) to the first good one after it: a good check moves the open outage
-- (offline_since) to alert_host_outage, kept a day for results written late.
WITH closed AS (
    INSERT INTO alert_host_outage (host, started_at, ended_at)
    SELECT host, coalesce(offline_since, checked_at), now() FROM alert_host
    WHERE host = %(host)s AND NOT connectivity_ok AND %(ok)s
    ON CONFLICT DO NOTHING
), pruned AS (
    DELETE FROM alert_host_outage WHERE host = %(host)s AND ended_at < now() - interval '1 day'
)
INSERT INTO alert_host AS h (host, connectivity_ok, checked_at, offline_since)
VALUES (%(host)s, %(ok)s, now(), CASE WHEN NOT %(ok)s THEN now() - make_interval(secs => %(lookback)s) END)
ON CONFLICT (host) DO UPDATE SET
    connectivity_ok = EXCLUDED.connectivity_ok, checked_at = EXCLUDED.checked_at,
    offline_since = CASE WHEN EXCLUDED.connectivity_ok THEN NULL
                         WHEN h.connectivity_ok THEN h.checked_at
                         ELSE coalesce(h.offline_since, h.checked_at) END;

-- name: forget_connectivity
-- No connectivity_url configured on this host: its failures always count.
DELETE FROM alert_host WHERE host = %(host)s;

-- name: region_heartbeat
-- This host's region is alive (the notifier of a host with a region, every few seconds; its
-- consumers' claims say so too: db/queries.sql claim_candidates_region).
INSERT INTO region_host (owner, region, seen_at) VALUES (%(owner)s, %(region)s, now())
ON CONFLICT (owner) DO UPDATE SET region = EXCLUDED.region, seen_at = EXCLUDED.seen_at;

-- name: announce_absent_regions
-- A region none of whose hosts has been seen for %(after)s seconds (two check.default_period;
-- seen: a notifier's heartbeat or a consumer's claim) is absent: its region_absence row is the
-- one definition of absent, which the quorum (alert_region_absent) and the readers use too
-- (migration 0017). One region_absent notice per absence, to the default channels
-- (whichever notifier inserts the row first writes it: the others' inserts conflict). A
-- region seen again is no longer absent. A host's old row goes after a day, unless it is its region's newest (a
-- region that lost every host stays absent, not unknown).
WITH seen AS (
    SELECT region, max(seen_at) AS last_seen FROM region_host GROUP BY region
), back AS (
    DELETE FROM region_absence a
    WHERE a.region IN (SELECT region FROM seen WHERE last_seen >= now() - make_interval(secs => %(after)s))
), pruned AS (
    DELETE FROM region_host h WHERE h.seen_at < now() - interval '1 day'
      AND EXISTS (SELECT 1 FROM region_host n WHERE n.region = h.region AND n.seen_at > h.seen_at)
), new AS (
    INSERT INTO region_absence (region, since)
    SELECT region, last_seen FROM seen WHERE last_seen < now() - make_interval(secs => %(after)s)
    ON CONFLICT DO NOTHING
    RETURNING region, since
)
INSERT INTO alert_outbox (key, channel, url_id, incident_id, kind, detail)
SELECT 'region_absent:' || n.region || ':' || floor(extract(epoch FROM n.since))::bigint, c.channel, 0, NULL,
       'region_absent', jsonb_build_object('region', n.region, 'since', n.since)
FROM new n CROSS JOIN LATERAL unnest(%(channels)s::text[]) AS c (channel)
ON CONFLICT (key, channel) DO NOTHING;

-- name: queue_reminders
-- Every alerts.repeat_interval while a URL stays down (not flapping, not silenced): one
-- reminder per channel. SKIP LOCKED: notifiers on other hosts, and a consumer closing the
-- incident right now, are never waited for; the key (incident, reminder number) and
-- UNIQUE (key, channel) keep hosts from queueing the same reminder twice.
WITH due AS (
    SELECT i.id FROM incident i
    WHERE i.ended_at IS NULL AND i.last_notice_at <= now() - make_interval(secs => %(interval)s)
    FOR UPDATE OF i SKIP LOCKED
), bumped AS (
    UPDATE incident SET reminders = incident.reminders + 1, last_notice_at = now()
    FROM due WHERE incident.id = due.id
    RETURNING incident.*
)
INSERT INTO alert_outbox (key, channel, url_id, incident_id, kind, detail)
SELECT 'incident:' || b.id || ':reminder:' || b.reminders, c.channel, b.url_id, b.id, 'reminder',
       jsonb_build_object('url', b.url, 'since', b.started_at, 'error_kind', b.last_error_kind,
                          'error', b.last_error, 'failed_checks', b.failed_checks, 'reminder', b.reminders)
FROM bumped b
JOIN url u ON u.id = b.url_id
JOIN url_state s ON s.url_id = b.url_id AND NOT s.flapping
CROSS JOIN LATERAL unnest(coalesce(u.notify, %(channels)s::text[])) AS c (channel)
WHERE NOT u.url LIKE ANY (ARRAY(SELECT like_pattern FROM silence WHERE starts_at <= now() AND ends_at > now()))
ON CONFLICT (key, channel) DO NOTHING;

-- name: silences_to_settle
-- Cheap guard for settle_silences (which scans every URL): is any silence over and unsettled?
SELECT EXISTS (SELECT 1 FROM silence WHERE NOT settled AND ends_at <= now());

-- name: settle_silences
-- Silences that are over (expired or removed), taken once by one notifier: each URL they
-- covered, no longer silenced, whose state differs from the last one announced gets that
-- state's notice now (a down that began inside, or a recovery that happened inside).
-- url_state rows are locked in url_id order, like the result path.
-- Likewise degraded and recovered (unless %(notify_degraded)s is false), which url_state does
-- not track as announced: the outbox, which keeps every notice queued (for history.raw_days),
-- says it. A URL degraded now is owed its episode's `degraded` notice when none is there (it
-- turned degraded inside); one up now is owed `recovered` when its last episode's `degraded`
-- went out and neither its `recovered` nor the `up` of an incident that began after it did
-- (it recovered inside). A URL owed an `up` that is degraded now is owed its `degraded` too,
-- queued after the `up` (the UNION ALL below keeps that order): without it, a later
-- `recovered` would follow no `degraded`. A `recovered` is no news beside an `up` owed now,
-- and a URL down now owes none.
WITH ended AS (
    UPDATE silence SET settled = true
    WHERE id IN (SELECT id FROM silence WHERE NOT settled AND ends_at <= now() FOR UPDATE SKIP LOCKED)
    RETURNING like_pattern
), changed AS (
    -- a degraded URL is up as far as down/up notices go (0008_assertions.sql)
    SELECT s.url_id, alert_up_or_down(s.state) AS state, s.incident_id, alert_redact_url(u.url) AS url,
           coalesce(u.notify, %(channels)s::text[]) AS channels
    FROM url_state s JOIN url u ON u.id = s.url_id
    WHERE u.url LIKE ANY (ARRAY(SELECT like_pattern FROM ended))
      AND NOT u.url LIKE ANY (ARRAY(SELECT like_pattern FROM silence WHERE starts_at <= now() AND ends_at > now()))
      AND s.state <> 'unknown' AND alert_up_or_down(s.state) <> coalesce(s.notified_state, 'up') AND NOT s.flapping
    ORDER BY s.url_id
    FOR UPDATE OF s
), marked AS (
    UPDATE url_state SET notified_state = c.state FROM changed c WHERE url_state.url_id = c.url_id
    RETURNING url_state.url_id
), episode AS (     -- the URLs' current degraded episode, and its `degraded` notice if queued
    SELECT s.url_id, s.state, s.since, s.degraded_streak, alert_redact_url(u.url) AS url,
           coalesce(u.notify, %(channels)s::text[]) AS channels,
           'degraded:' || s.url_id || ':' || s.degraded_seq || ':' AS key,
           (SELECT (o.detail->>'since')::timestamptz FROM alert_outbox o
            WHERE o.key = 'degraded:' || s.url_id || ':' || s.degraded_seq || ':start' LIMIT 1) AS announced_since
    FROM url_state s JOIN url u ON u.id = s.url_id
    WHERE %(notify_degraded)s AND s.degraded_seq > 0 AND s.state IN ('degraded', 'up') AND NOT s.flapping
      AND u.url LIKE ANY (ARRAY(SELECT like_pattern FROM ended))
      AND NOT u.url LIKE ANY (ARRAY(SELECT like_pattern FROM silence WHERE starts_at <= now() AND ends_at > now()))
      AND (s.state = 'degraded' OR s.url_id NOT IN (SELECT url_id FROM changed))
), degraded_notice AS (
    SELECT e.url_id, e.key || 'start' AS key, 'degraded' AS kind, e.channels,
           jsonb_build_object('url', e.url, 'since', e.since, 'degraded_checks', e.degraded_streak,
                              'after_silence', true,
                              'error', (SELECT t.error FROM task_result t WHERE t.url_id = e.url_id AND t.degraded
                                        ORDER BY t.scheduled_at DESC LIMIT 1)) AS detail
    FROM episode e WHERE e.state = 'degraded' AND e.announced_since IS NULL
    UNION ALL
    SELECT e.url_id, e.key || 'end', 'recovered', e.channels,
           jsonb_build_object('url', e.url, 'since', e.since, 'after_silence', true)
    FROM episode e
    WHERE e.state = 'up' AND e.announced_since IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM alert_outbox o WHERE o.key = e.key || 'end')
      AND NOT EXISTS (SELECT 1 FROM incident i JOIN alert_outbox o ON o.key = 'incident:' || i.id || ':up'
                      WHERE i.url_id = e.url_id AND i.started_at >= e.announced_since)
), notice AS (
    SELECT c.url_id, i.id AS incident_id, c.state AS kind, c.channels,
           CASE WHEN c.state = 'down'
                THEN jsonb_build_object('url', c.url, 'error_kind', i.first_error_kind, 'error', i.first_error,
                                        'since', i.started_at, 'failed_checks', i.failed_checks,
                                        'after_silence', true)
                ELSE jsonb_build_object('url', c.url, 'since', i.started_at, 'ended_at', i.ended_at,
                                        'down_seconds', extract(epoch FROM i.ended_at - i.started_at),
                                        'failed_checks', i.failed_checks, 'after_silence', true) END AS detail
    FROM changed c
    JOIN LATERAL (SELECT * FROM incident WHERE incident.url_id = c.url_id
                  ORDER BY started_at DESC LIMIT 1) i ON true
    WHERE c.url_id IN (SELECT url_id FROM marked)
)
INSERT INTO alert_outbox (key, channel, url_id, incident_id, kind, detail)
SELECT 'incident:' || n.incident_id || ':' || n.kind, ch.channel, n.url_id, n.incident_id, n.kind, n.detail
FROM notice n CROSS JOIN LATERAL unnest(n.channels) AS ch (channel)
UNION ALL
SELECT d.key, ch.channel, d.url_id, NULL, d.kind, d.detail
FROM degraded_notice d CROSS JOIN LATERAL unnest(d.channels) AS ch (channel)
ON CONFLICT (key, channel) DO NOTHING;

-- name: names_only_glob
-- The monitors' names a glob matches (a few), when it matches no monitored URL: a glob is over
-- URLs, so such a glob covers nothing and its user meant names (alerts/cli.py refuse_name_glob).
SELECT name FROM url
WHERE name LIKE %(like_pattern)s AND NOT EXISTS (SELECT 1 FROM url WHERE url LIKE %(like_pattern)s)
ORDER BY name LIMIT 3;

-- name: add_silence
INSERT INTO silence (pattern, like_pattern, ends_at, reason)
VALUES (%(pattern)s, %(like_pattern)s, now() + make_interval(secs => %(seconds)s), %(reason)s)
RETURNING id, starts_at, ends_at;

-- name: list_silences
-- Silences in force, and those over in the last day (for the record). A maintenance window's
-- occurrences are silences too, listed by `maintenance list`.
SELECT id, pattern, starts_at, ends_at, reason, ends_at > now() AS active
FROM silence WHERE ends_at > now() - interval '1 day' AND maintenance_id IS NULL
ORDER BY ends_at DESC;

-- name: end_silence
-- `silence remove`: end it now (kept for the record); the next notifier sweep settles it.
UPDATE silence SET ends_at = least(ends_at, now()) WHERE id = %(id)s RETURNING id, pattern;

-- name: list_incidents
-- Incidents, newest first; optionally only open ones, or one URL's.
SELECT i.id, i.url, i.started_at, i.ended_at, i.first_error_kind, i.first_error, i.last_error_kind,
       i.last_error, i.failed_checks, i.end_reason
FROM incident i
WHERE (NOT %(open)s OR i.ended_at IS NULL)
  AND (%(url)s::text IS NULL OR i.url_id = (SELECT id FROM url WHERE url = %(url)s)
       OR i.url = alert_redact_url(%(url)s))
ORDER BY i.started_at DESC, i.id DESC
LIMIT %(limit)s;

-- name: list_dead
-- Notices given up on after alerts.max_attempts (or whose sender vanished), newest first.
SELECT o.id, o.key, o.channel, o.kind, o.incident_id, o.detail->>'url' AS url, o.attempts, o.last_error,
       o.created_at
FROM alert_outbox o
WHERE o.status = 'dead' AND (%(url)s::text IS NULL OR o.url_id = (SELECT id FROM url WHERE url = %(url)s)
                             OR o.detail->>'url' = alert_redact_url(%(url)s))
ORDER BY o.id DESC
LIMIT %(limit)s;
