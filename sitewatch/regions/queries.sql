-- The readers' SQL of regions (sitewatch/regions/state.py): each block starts with
-- "-- name: NAME" and a description. The alerts' SQL that moves the states is in the
-- migrations (sitewatch/db/migrations/regions.sql, 0016_region_confirm.sql).

-- name: region_states
-- Each region of each URL with regions (the ids given, or all): its state from
-- url_region_state (unknown before its first result), or `absent` while the region has a
-- region_absence row (alert_region_absent's rule, migration 0017: the one definition the
-- quorum and the region_absent notice share), and its latest error while it is failing.
-- Regions in the URL's order. The URLs without regions are filtered out first
-- (cardinality(regions) = 0): an install without regions reads no row of url_region_state.
SELECT u.id, r.region,
       CASE WHEN a.region IS NOT NULL THEN 'absent' ELSE coalesce(rs.state, 'unknown') END,
       rs.since,
       CASE WHEN rs.fail_streak > 0 THEN rs.last_error_kind END,
       CASE WHEN rs.fail_streak > 0 THEN rs.last_error END
FROM url u
CROSS JOIN LATERAL unnest(u.regions) WITH ORDINALITY AS r(region, n)
LEFT JOIN url_region_state rs ON rs.url_id = u.id AND rs.region = r.region
LEFT JOIN region_absence a ON a.region = r.region
WHERE cardinality(u.regions) > 0 AND (%(all)s OR u.id = ANY (%(ids)s))
ORDER BY u.id, r.n;

-- name: region_p95
-- One URL's p95 response time per region over [since, now), from its raw results (the
-- rollups keep no region): the web page's row per region.
SELECT region, percentile_disc(0.95) WITHIN GROUP (ORDER BY response_time_ms)
FROM task_result
WHERE url_id = %(id)s AND scheduled_at >= %(since)s AND region <> '' AND response_time_ms IS NOT NULL
GROUP BY region;
