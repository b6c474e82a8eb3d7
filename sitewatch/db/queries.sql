-- All of sitewatch's SQL (migrations aside). Each block starts with
-- "-- name: NAME" and a description; store.py loads them once.

-- name: add_url
-- Register one monitor, first slot due now (a URL added by hand is checked within seconds).
-- Refused (no row returned) when its identity is taken: its name, or, unnamed, its URL.
INSERT INTO url (url, period, regex, timeout, method, expected_status, max_redirects, verify_tls,
                 next_check_at, failure_threshold, success_threshold, notify, assertions, degraded,
                 name, headers, body, body_json, bearer, client_cert, client_key, ip_version, regions,
                 down_when)
VALUES (%(url)s, %(period)s, %(regex)s, %(timeout)s, %(method)s, %(expected_status)s,
        %(max_redirects)s, %(verify_tls)s, now(), %(failure_threshold)s, %(success_threshold)s,
        %(notify)s::text[], %(assertions)s::text[], %(degraded)s::text[], %(name)s, %(headers)s::text[],
        %(body)s, %(body_json)s, %(bearer)s, %(client_cert)s, %(client_key)s, %(ip_version)s,
        %(regions)s::text[], %(down_when)s)
ON CONFLICT DO NOTHING
RETURNING id;

-- name: import_urls
-- Upsert many monitors in one statement (execute_values fills VALUES). New ones get their first
-- slot spread at random across their period, so 10,000 URLs with one period do not fire in
-- the same second; an existing one keeps its slot phase unless its period changes.
-- clock_timestamp(), not now(): now() is fixed when the transaction starts, and a slot the
-- producer enqueued since then would be scheduled again (the schedule moved backwards).
-- {conflict} is the identity: "(url) WHERE name IS NULL" for unnamed monitors, "(name)" for
-- named ones (store.py runs one statement per kind: one arbiter each).
INSERT INTO url AS u (url, period, regex, timeout, method, expected_status, max_redirects,
                      verify_tls, next_check_at, failure_threshold, success_threshold, notify,
                      assertions, degraded, name, headers, body, body_json, bearer, client_cert, client_key,
                      ip_version, regions, down_when)
SELECT v.url, v.period, v.regex, v.timeout, v.method, v.expected_status, v.max_redirects,
       v.verify_tls, clock_timestamp() + random() * make_interval(secs => v.period), v.failure_threshold,
       v.success_threshold, v.notify, v.assertions, v.degraded, v.name, v.headers, v.body, v.body_json,
       v.bearer, v.client_cert, v.client_key, v.ip_version, v.regions, v.down_when
FROM (VALUES %s) AS v (url, period, regex, timeout, method, expected_status, max_redirects, verify_tls,
                       failure_threshold, success_threshold, notify, assertions, degraded, name, headers,
                       body, body_json, bearer, client_cert, client_key, ip_version, regions, down_when)
ON CONFLICT {conflict} DO UPDATE SET
    url = EXCLUDED.url,
    period = EXCLUDED.period, regex = EXCLUDED.regex, timeout = EXCLUDED.timeout,
    method = EXCLUDED.method, expected_status = EXCLUDED.expected_status,
    max_redirects = EXCLUDED.max_redirects, verify_tls = EXCLUDED.verify_tls,
    failure_threshold = EXCLUDED.failure_threshold, success_threshold = EXCLUDED.success_threshold,
    notify = EXCLUDED.notify, assertions = EXCLUDED.assertions, degraded = EXCLUDED.degraded,
    headers = EXCLUDED.headers, body = EXCLUDED.body,
    body_json = EXCLUDED.body_json, bearer = EXCLUDED.bearer, client_cert = EXCLUDED.client_cert,
    client_key = EXCLUDED.client_key, ip_version = EXCLUDED.ip_version,
    regions = EXCLUDED.regions, down_when = EXCLUDED.down_when,
    next_check_at = CASE WHEN u.period = EXCLUDED.period THEN u.next_check_at
                         ELSE least(u.next_check_at, EXCLUDED.next_check_at) END
RETURNING (xmax = 0) AS inserted;

-- name: find_monitors
-- The monitors a command's argument names: the one with that name, else those with that URL.
SELECT id, url, name FROM url WHERE name = %(name)s
UNION ALL
SELECT id, url, name FROM url WHERE url = %(url)s AND NOT EXISTS (SELECT 1 FROM url WHERE name = %(name)s)
ORDER BY name NULLS FIRST;

-- name: monitor_settings
-- One monitor's stored settings (url update reads them, changes some, writes them back).
SELECT id, url, period, regex, timeout, method, expected_status, max_redirects, verify_tls,
       failure_threshold, success_threshold, notify, name, headers, body, body_json, bearer,
       client_cert, client_key, ip_version, assertions, degraded, grace, cron, tz, regions, down_when
FROM url WHERE id = %(id)s FOR UPDATE;

-- name: update_url
-- Change a monitor in place: its id, results, state and incidents stay. A new period
-- re-slots it from now (its next slot is due now, then every period); an unchanged period
-- keeps its slot phase. A push monitor (push_slot set) whose schedule (period, or cron and
-- zone) or grace changes starts a new slot, and its open /start run is forgotten: a
-- fixed-rate one now, missed at now + period + grace; a cron one at its next fire time
-- %(first_slot)s, missed at that + grace (check/push.py, check/pushcron.py). A cron monitor's
-- period (its longest gap, recomputed) does not re-slot it.
UPDATE url SET
    url = %(url)s, period = %(period)s, regex = %(regex)s, timeout = %(timeout)s, method = %(method)s,
    expected_status = %(expected_status)s, max_redirects = %(max_redirects)s, verify_tls = %(verify_tls)s,
    failure_threshold = %(failure_threshold)s, success_threshold = %(success_threshold)s,
    notify = %(notify)s::text[], name = %(name)s, headers = %(headers)s::text[], body = %(body)s,
    body_json = %(body_json)s, bearer = %(bearer)s, client_cert = %(client_cert)s,
    client_key = %(client_key)s, ip_version = %(ip_version)s,
    assertions = %(assertions)s::text[], degraded = %(degraded)s::text[], grace = %(grace)s,
    cron = %(cron)s, tz = %(tz)s, regions = %(regions)s::text[], down_when = %(down_when)s,
    push_slot = CASE WHEN (grace = %(grace)s AND cron IS NOT DISTINCT FROM %(cron)s AND tz IS NOT DISTINCT FROM %(tz)s AND (cron IS NOT NULL OR period = %(period)s)) THEN push_slot
                     WHEN push_slot IS NOT NULL THEN coalesce(%(first_slot)s::timestamptz, now()) END,
    push_started_at = CASE WHEN (grace = %(grace)s AND cron IS NOT DISTINCT FROM %(cron)s AND tz IS NOT DISTINCT FROM %(tz)s AND (cron IS NOT NULL OR period = %(period)s)) THEN push_started_at END,
    next_check_at = CASE WHEN push_slot IS NULL THEN
                             CASE WHEN period = %(period)s THEN next_check_at ELSE now() END
                         WHEN (grace = %(grace)s AND cron IS NOT DISTINCT FROM %(cron)s AND tz IS NOT DISTINCT FROM %(tz)s AND (cron IS NOT NULL OR period = %(period)s)) THEN next_check_at
                         ELSE coalesce(%(first_slot)s::timestamptz + make_interval(secs => %(grace)s),
                                       now() + make_interval(secs => %(period)s + %(grace)s)) END
WHERE id = %(id)s;

-- name: lock_removed_url
-- Before remove_url, in its transaction, three statements: the url rows (the producer skips
-- them: no new task), then their tasks and their alert state in the result path's order (task,
-- then url_state, each by id), so a result batch recording one commits first (no deadlock) and
-- remove_url's own snapshot sees the incident that batch may have opened.
SELECT id FROM url WHERE id = ANY (%(ids)s::bigint[]) ORDER BY id FOR UPDATE;
SELECT t.id FROM task t WHERE t.url_id = ANY (%(ids)s::bigint[]) ORDER BY t.id FOR UPDATE OF t;
SELECT s.url_id FROM url_state s WHERE s.url_id = ANY (%(ids)s::bigint[]) ORDER BY s.url_id FOR UPDATE OF s;

-- name: remove_url
-- Forget a URL; its outstanding task and alert state go with it (ON DELETE CASCADE), its
-- history stays. An open incident is closed now (end_reason 'url removed'), and if its down
-- was announced, each of the URL's channels gets a `removed` notice (not while silenced):
-- nobody is left with a down that never gets its end. One monitor (url remove) or many (apply
-- --prune). Returns (monitors removed, incidents closed, notices queued).
WITH gone AS (
    DELETE FROM url WHERE id = ANY (%(ids)s::bigint[]) RETURNING id, url, notify
), closed AS (
    UPDATE incident i SET ended_at = now(), end_reason = 'url removed'
    FROM gone WHERE i.url_id = gone.id AND i.ended_at IS NULL
    RETURNING i.id, i.url_id, i.url, i.started_at, i.ended_at, i.failed_checks, i.last_error_kind, i.last_error
), queued AS (
    INSERT INTO alert_outbox (key, channel, url_id, incident_id, kind, detail)
    SELECT 'incident:' || c.id || ':removed', ch.channel, c.url_id, c.id, 'removed',
           jsonb_build_object('url', c.url, 'since', c.started_at, 'ended_at', c.ended_at,
                              'down_seconds', extract(epoch FROM c.ended_at - c.started_at),
                              'failed_checks', c.failed_checks, 'error_kind', c.last_error_kind,
                              'error', c.last_error)
    FROM closed c JOIN gone g ON g.id = c.url_id
    JOIN url_state s ON s.url_id = c.url_id AND s.notified_state = 'down'
    CROSS JOIN LATERAL unnest(coalesce(g.notify, %(channels)s::text[])) AS ch (channel)
    WHERE NOT g.url LIKE ANY (ARRAY(SELECT like_pattern FROM silence WHERE starts_at <= now() AND ends_at > now()))
    ON CONFLICT (key, channel) DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM closed), (SELECT count(*) FROM queued);

-- name: apply_lock
-- One `apply` at a time, until its transaction ends: two applies planned against the same
-- monitors would each print a plan the other made untrue. `run`, `url add` and `import` do
-- not take it (they never wait for an apply beyond the rows it writes).
SELECT pg_advisory_xact_lock(%(key)s);

-- name: apply_monitors
-- Every monitor's settings, for `apply` to compare with its file. {columns} is UrlEntry's
-- fields (store.py), so a field added to monitors is compared without a change here.
SELECT id, {columns} FROM url;

-- name: apply_add
-- `apply`'s new monitors, one statement: %(rows)s is a JSON array of url rows. First slots are
-- spread at random across the period, as import does, so 100,000 new URLs do not fire in the
-- same second. clock_timestamp(), not now(): see import_urls.
INSERT INTO url ({columns}, next_check_at)
SELECT {v_columns}, clock_timestamp() + random() * make_interval(secs => v.period)
FROM json_populate_recordset(NULL::url, %(rows)s) AS v;

-- name: apply_update
-- `apply`'s changes in place, one statement (%(rows)s as in apply_add, with each row's id): as
-- update_url, its id, results, state and incidents stay; a new period re-slots it from now
-- (clock_timestamp(): the apply's transaction may have begun seconds ago), an unchanged
-- period keeps its slot phase.
UPDATE url AS u SET {set_columns},
    next_check_at = CASE WHEN u.period = v.period THEN u.next_check_at ELSE clock_timestamp() END
FROM json_populate_recordset(NULL::url, %(rows)s) AS v
WHERE u.id = v.id;

-- name: list_urls
-- Every URL with its settings and its last recorded result (one index probe per URL).
SELECT u.url, u.name, u.period, u.regex, u.timeout, u.method, u.expected_status, u.max_redirects,
       u.verify_tls, u.headers, u.body, u.body_json, u.bearer, u.client_cert, u.client_key, u.ip_version,
       u.created_at, u.next_check_at, u.skipped_slots, u.assertions, u.degraded, u.grace, u.cron, u.tz,
       u.regions, u.down_when,
       r.scheduled_at AS last_scheduled_at, r.started_at AS last_started_at, r.ok AS last_ok,
       r.degraded AS last_degraded, r.status_code AS last_status_code, r.response_time_ms AS last_response_time_ms,
       r.error_kind AS last_error_kind, r.error AS last_error
FROM url u
LEFT JOIN LATERAL (
    SELECT * FROM task_result t WHERE t.url_id = u.id ORDER BY t.scheduled_at DESC LIMIT 1
) r ON true
ORDER BY u.url, u.name NULLS FIRST;

-- name: enqueue_due
-- The producer's one statement: lock due URLs (SKIP LOCKED: other producers take others),
-- enqueue one task per due URL (one per region for a URL with regions) and advance each cursor by whole periods (fixed rate), then
-- wake the consumers. The task is for the latest slot already due (t0 + kP <= now): after a
-- stall of a period or more, the older slots are skipped and counted, with no burst of
-- backlog and no URL left unchecked for almost two periods. A slot is also skipped, and
-- counted, when the URL still has a task outstanding (no pile-up behind a slow site); with
-- regions, when every region still has its task outstanding. Returns the URLs due, the tasks
-- enqueued (one per region: the checks asked for) and the slots skipped.
-- Plan: the UPDATE reaches url through "id = ANY (ARRAY(SELECT id FROM due))" (primary-key
-- probes) and tests "was it enqueued" with a hashed IN subplan. A plain join to the CTEs
-- (estimated at batch rows) made the planner hash a seq scan of the whole url table on every
-- statement at the default batch size, or nested-loop due x enqueued (batch squared).
WITH due AS (
    SELECT id, period, periods_late, regions,
           next_check_at + periods_late * make_interval(secs => period) AS slot
    FROM (SELECT id, period, next_check_at, regions,
                 floor(extract(epoch FROM now() - next_check_at) / period)::bigint AS periods_late
          FROM url
          WHERE next_check_at <= now() AND push_slot IS NULL   -- push monitors are never checked
          ORDER BY next_check_at
          LIMIT %(batch)s
          FOR UPDATE SKIP LOCKED) AS locked
), enqueued AS (
    -- one task per listed region; a URL without regions one task, region '' (no unnest: the
    -- hot path of an install without regions stays as it was)
    INSERT INTO task (url_id, scheduled_at, available_at, region)
    SELECT id, slot, now(), '' FROM due WHERE cardinality(regions) = 0
    UNION ALL
    SELECT id, slot, now(), r.region FROM due CROSS JOIN LATERAL unnest(due.regions) AS r (region)
    WHERE cardinality(regions) > 0
    ON CONFLICT (url_id, region) DO NOTHING
    RETURNING url_id
), advanced AS (
    UPDATE url SET
        next_check_at = d.slot + make_interval(secs => d.period),
        skipped_slots = url.skipped_slots + d.skipped
    FROM (SELECT id, slot, period,
                 periods_late + CASE WHEN id IN (SELECT url_id FROM enqueued) THEN 0 ELSE 1 END AS skipped
          FROM due) AS d
    WHERE url.id = ANY (ARRAY(SELECT id FROM due)) AND url.id = d.id
    RETURNING d.skipped
)
SELECT (SELECT count(*) FROM due) AS due,
       (SELECT count(*) FROM enqueued) AS enqueued,
       (SELECT coalesce(sum(skipped), 0) FROM advanced) AS skipped,
       (SELECT pg_notify('sitewatch_task', '') FROM (SELECT 1 FROM enqueued LIMIT 1) AS any_task) AS notified;

-- name: tasks_ready
-- The producer's backpressure: tasks this host's consumers could claim now (claim_candidates'
-- ranges of task_available_at_idx: %(regions)s is '' and the host's region), counted up to
-- %(limit)s, so the count reads at most that many index entries however deep the queue.
SELECT count(*) FROM (
    SELECT 1 FROM task WHERE region = ANY (%(regions)s) AND available_at <= now() LIMIT %(limit)s
) AS ready;

-- name: seconds_until_due
-- How long the producer may sleep: seconds until the earliest cursor (index scan, one row).
SELECT extract(epoch FROM min(next_check_at) - now()) FROM url;

-- name: claim_tasks
-- A consumer's claim, one statement: take up to %(limit)s claimable tasks (fresh ones, and
-- leased ones whose lease expired: recovery lives on the claim path, no reaper), lease them
-- for the URL's timeout plus a margin, and return what the check needs. A task that has
-- already been claimed max_attempts times is not handed out again: its slot is recorded as
-- 'lost', so no slot disappears silently.
-- Plan: the DELETE and UPDATE reach task through "id = ANY (ARRAY(SELECT id FROM candidate))"
-- (primary-key probes); a join to the CTE let the planner seq-scan the whole (churning, often
-- bloated) task table twice per claim.
-- Regions: {candidates} is claim_candidates for a host without a region (tasks of region ''
-- only: one range of the index, the claim of an install without regions), else
-- claim_candidates_region (store.py claim_tasks).
WITH {candidates}, lost AS (
    DELETE FROM task
    WHERE task.id = ANY (ARRAY(SELECT id FROM candidate)) AND task.attempts >= %(max_attempts)s
    RETURNING task.url_id, task.scheduled_at, task.attempts, task.region
), lost_recorded AS (
    INSERT INTO task_result (url_id, scheduled_at, started_at, ok, error_kind, error, attempt, checked_by, region)
    SELECT url_id, scheduled_at, now(), false, 'lost',
           'no result after ' || attempts || ' attempts (the consumers checking it died or lost their lease)',
           attempts, %(owner)s, region
    FROM lost
    ON CONFLICT (url_id, scheduled_at, region) DO NOTHING
    RETURNING 1
), claimed AS (
    UPDATE task SET
        status = 1,
        attempts = task.attempts + 1,
        lease_owner = %(owner)s,
        lease_expires_at = now() + make_interval(secs => url.timeout + %(lease_margin)s),
        available_at = now() + make_interval(secs => url.timeout + %(lease_margin)s)
    FROM url
    WHERE task.id = ANY (ARRAY(SELECT id FROM candidate)) AND url.id = task.url_id
      AND task.attempts < %(max_attempts)s
    RETURNING task.id, task.attempts, task.url_id, task.scheduled_at, url.url, url.regex, url.timeout,
              url.method, url.expected_status, url.max_redirects, url.verify_tls,
              url.assertions, url.degraded,
              url.headers, url.body, url.body_json, url.bearer, url.client_cert, url.client_key,
              url.ip_version
)
SELECT * FROM claimed
-- One more row, its id null, when slots were recorded lost: how many (for the metrics).
UNION ALL
SELECT NULL, count(*)::integer, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
FROM lost_recorded HAVING count(*) > 0;

-- name: claim_candidates
-- claim_tasks' candidates on a host without a region: the '' tasks, oldest first.
candidate AS (
    SELECT id FROM task
    WHERE region = '' AND available_at <= now()
    ORDER BY available_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)

-- name: claim_candidates_region
-- claim_tasks' candidates on a host of region %(region)s: its region's tasks and the '' ones
-- (any host checks a URL without regions), oldest first. Two ranges of the index, each
-- LIMITed and locked (FOR UPDATE is not allowed with UNION); rows locked beyond the outer
-- LIMIT are let go when the claim commits, a moment later.
own AS (
    SELECT id, available_at FROM task
    WHERE region = %(region)s AND available_at <= now()
    ORDER BY available_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), shared AS (
    SELECT id, available_at FROM task
    WHERE region = '' AND available_at <= now()
    ORDER BY available_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), candidate AS (
    SELECT id FROM (SELECT * FROM own UNION ALL SELECT * FROM shared) AS both_ranges
    ORDER BY available_at
    LIMIT %(limit)s
), heartbeat AS (
    -- A claim is a sign of life of the region too (region_host, as the notifier's heartbeat): a
    -- stuck notifier does not make a region absent while its consumers check. At most one
    -- write a second per consumer; a host without a region never runs this (claim_candidates).
    INSERT INTO region_host AS h (owner, region, seen_at) VALUES (%(owner)s, %(region)s, now())
    ON CONFLICT (owner) DO UPDATE SET region = EXCLUDED.region, seen_at = EXCLUDED.seen_at
    WHERE h.seen_at < now() - interval '1 second'
)

-- name: complete_tasks
-- Write a batch of results and delete their tasks, one statement (one array per column).
-- Fenced by the lease: only a task still leased by this owner at this attempt is finished, so
-- a consumer that lost its lease cannot record the slot; UNIQUE (url_id, scheduled_at, region) is the
-- last guard. Every join to the deleted tasks is on id AND attempt: a batch may hold the same
-- task twice (attempt 1, whose lease was lost, and attempt 2), and only the attempt whose lease
-- is current may be recorded. Returns the task ids of the results refused.
WITH result AS (
    SELECT * FROM unnest(%(task_id)s::bigint[], %(attempt)s::integer[], %(owner)s::text[],
                         %(started_at)s::timestamptz[], %(response_time_ms)s::float8[],
                         %(status_code)s::integer[], %(regex_matched)s::boolean[], %(ok)s::boolean[],
                         %(error_kind)s::text[], %(error)s::text[], %(cert_days_left)s::integer[],
                         %(dns_ms)s::real[], %(connect_ms)s::real[], %(tls_ms)s::real[], %(first_byte_ms)s::real[],
                         %(degraded)s::boolean[])
        AS r (task_id, attempt, owner, started_at, response_time_ms, status_code, regex_matched, ok,
              error_kind, error, cert_days_left, dns_ms, connect_ms, tls_ms, first_byte_ms, degraded)
), finished AS (
    DELETE FROM task USING result
    WHERE task.id = result.task_id AND task.attempts = result.attempt AND task.lease_owner = result.owner
    RETURNING task.id, task.attempts, task.url_id, task.scheduled_at, task.region
), recorded AS (
    INSERT INTO task_result (url_id, scheduled_at, started_at, response_time_ms, status_code,
                             regex_matched, ok, error_kind, error, cert_days_left, attempt, checked_by,
                             dns_ms, connect_ms, tls_ms, first_byte_ms, degraded, region)
    SELECT f.url_id, f.scheduled_at, r.started_at, r.response_time_ms, r.status_code, r.regex_matched,
           r.ok, r.error_kind, r.error, r.cert_days_left, r.attempt, r.owner,
           r.dns_ms, r.connect_ms, r.tls_ms, r.first_byte_ms, r.degraded, f.region
    FROM result r JOIN finished f ON f.id = r.task_id AND f.attempts = r.attempt
    ON CONFLICT (url_id, scheduled_at, region) DO NOTHING
    RETURNING url_id, scheduled_at, ok, error_kind, error, cert_days_left, checked_by, degraded, region
), alerted AS (
    -- Alerts (0002_alerts.sql, regions.sql): url_state, url_region_state, incidents and the outbox
    -- move in this transaction, fed by the rows actually recorded.
    -- Results without a region (every result of an install without regions) take version 8's
    -- path as before; those with one move their region's state and the URL's overall state by
    -- down_when (regions.sql), called only when there are some.
    INSERT INTO alert_outbox (key, channel, url_id, incident_id, kind, detail)
    SELECT * FROM alert_apply_results((SELECT array_agg(ROW(url_id, scheduled_at, ok, error_kind, error,
                                                            cert_days_left, checked_by, degraded)::alert_result)
                                       FROM recorded WHERE region = ''),
                                      %(failure_threshold)s, %(success_threshold)s, %(channels)s::text[],
                                      %(notify_degraded)s)
    UNION ALL
    SELECT * FROM alert_apply_region_results(
        (SELECT array_agg(ROW(url_id, scheduled_at, ok, error_kind, error, cert_days_left, checked_by, degraded,
                              region)::alert_region_result)
         FROM recorded WHERE region <> ''),
        %(failure_threshold)s, %(success_threshold)s, %(channels)s::text[], %(notify_degraded)s, %(down_when)s)
    WHERE EXISTS (SELECT 1 FROM recorded WHERE region <> '')    -- a one-time filter: no call without one
    ON CONFLICT (key, channel) DO NOTHING
)
SELECT r.task_id FROM result r
LEFT JOIN finished f ON f.id = r.task_id AND f.attempts = r.attempt
WHERE f.id IS NULL;

-- name: release_tasks
-- Hand back leased tasks that were not checked (shutdown, or a failure of the monitor itself):
-- claimable again after %(delay)s seconds, and the attempt they did not use is not counted.
-- Each task is matched at its attempt when one is given (null: any attempt of ours).
UPDATE task SET status = 0, lease_owner = NULL, lease_expires_at = NULL,
                available_at = now() + make_interval(secs => %(delay)s),
                attempts = greatest(task.attempts - 1, 0)
FROM unnest(%(ids)s::bigint[], %(attempts)s::integer[]) AS r (id, attempt)
WHERE task.id = r.id AND (r.attempt IS NULL OR task.attempts = r.attempt)
  AND task.lease_owner = %(owner)s;

-- name: queue_depth
-- Tasks waiting and tasks leased, for the summary line.
SELECT count(*) FILTER (WHERE status = 0) AS waiting, count(*) FILTER (WHERE status = 1) AS leased
FROM task;
