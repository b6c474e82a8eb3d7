-- Queries of the operations subpackage (loaded with db/store.py's loader).

-- name: url_state_exists
-- Whether the alerts subsystem's url_state table exists yet (NULL when it does not).
SELECT to_regclass('url_state') IS NOT NULL;

-- name: urls_by_state
-- URLs per alert state, cluster-wide; a URL without a url_state row is 'unknown'.
SELECT coalesce(s.state, 'unknown'), count(*) FROM url u LEFT JOIN url_state s ON s.url_id = u.id GROUP BY 1;

-- name: urls_total
-- URLs cluster-wide, before the alerts subsystem tracks their state: all 'unknown'.
SELECT 'unknown', count(*) FROM url;

-- name: schedule_behind
-- Seconds the oldest due URL has waited to be enqueued (0: none due), cluster-wide. The
-- producers hold due URLs back while the consumers are a batch behind (run/producer.py), so
-- an overloaded fleet shows here, not in the queue. One probe of url_next_check_at_idx.
SELECT coalesce(extract(epoch FROM now() - min(next_check_at)), 0)::float8 FROM url
WHERE next_check_at <= now();

-- name: ping
-- Readiness: the database answers.
SELECT 1;

-- name: last_results
-- Blackbox-compatible per-URL metrics (metrics.per_url): the last result of the first
-- %(limit)s URLs by id, one index probe on task_result (url_id, scheduled_at) per URL.
SELECT u.id, u.url, r.ok, r.response_time_ms, r.status_code, r.cert_days_left,
       extract(epoch FROM r.started_at)::float8
FROM (SELECT id, url FROM url ORDER BY id LIMIT %(limit)s) u
LEFT JOIN LATERAL (
    SELECT ok, response_time_ms, status_code, cert_days_left, started_at FROM task_result
    WHERE url_id = u.id ORDER BY scheduled_at DESC LIMIT 1
) r ON true
ORDER BY u.id;
