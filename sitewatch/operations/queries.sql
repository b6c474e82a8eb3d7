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

-- name: ping
-- Readiness: the database answers.
SELECT 1;
