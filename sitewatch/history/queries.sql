-- The history subsystem's SQL (rollups, uptime, status, export). Each block starts with
-- "-- name: NAME" and a description; history/rollup.py and history/uptime.py load them once
-- with db/store.py's loader. {bucket} is replaced by histogram.BUCKET_SQL at load time.

-- name: rollup_stage_create
-- The hourly rollups are computed in two steps, each in short statements (history/pacing.py):
-- raw rows are read a time slice at a time (they are stored in time order: a slice is a
-- range of pages, found by the BRIN index) and grouped into this session's staging table
-- by (URL, hour, latency bucket); then the staged groups are merged into rollup_hour a range
-- of URLs at a time. A slice splits no group's sums: the merge adds them up again.
-- The staging table is partitioned by ranges of URL ids (rollup.py makes the partitions), so
-- a merge reads only its range's partitions with no index: an index built after the slices
-- was one statement the pace could not cut (5.3 s for 10 million raw rows on two busy cores).
DROP TABLE IF EXISTS pg_temp.rollup_stage;
CREATE TEMP TABLE rollup_stage (
    url_id bigint, bucket timestamptz, bi integer, checks bigint, ok bigint, failed bigint, non_2xx bigint,
    rt_sum numeric, rt_min double precision, rt_max double precision, cert_days_min integer
) PARTITION BY RANGE (url_id);

-- name: rollup_stage_slice
-- Group the raw rows of one time slice [from, to) into the staging table. rt_sum is summed
-- as numeric: exact, so reruns are identical bit for bit whatever order the rows come in.
INSERT INTO rollup_stage
SELECT url_id, date_trunc('hour', scheduled_at, 'UTC'), {bucket},
       count(*), count(*) FILTER (WHERE ok AND outside_maintenance(ranges, scheduled_at)),
       -- A `lost` slot is the monitor's failure to check, not the site's: neither ok nor failed;
       -- a slot inside a maintenance window (migration 0014) is checked but counts neither.
       count(*) FILTER (WHERE NOT ok AND error_kind IS DISTINCT FROM 'lost' AND outside_maintenance(ranges, scheduled_at)),
       count(*) FILTER (WHERE status_code IS NULL OR status_code NOT BETWEEN 200 AND 299),
       sum(response_time_ms::numeric), min(response_time_ms), max(response_time_ms), min(cert_days_left)
FROM task_result LEFT JOIN maintenance_ranges(%(from)s, %(to)s) USING (url_id)
WHERE scheduled_at >= %(from)s AND scheduled_at < %(to)s
GROUP BY 1, 2, 3;

-- name: rollup_hours_merge
-- Overwrite the hourly rollups of URLs [lo, hi) in [from, to) from the staged groups (one
-- per URL, hour and latency bucket once the slices' parts are added up). Rows of that range
-- that no raw row supports any more are deleted, so a rerun gives exactly what a first run
-- gives.
WITH fine AS (
    SELECT url_id, bucket, bi, sum(checks) AS checks, sum(ok) AS ok, sum(failed) AS failed,
           sum(non_2xx) AS non_2xx, sum(rt_sum) AS rt_sum, min(rt_min) AS rt_min, max(rt_max) AS rt_max,
           min(cert_days_min) AS cert_days_min
    FROM rollup_stage
    WHERE url_id >= %(lo)s AND url_id < %(hi)s
    GROUP BY 1, 2, 3
), grouped AS (
    SELECT url_id, bucket, sum(checks)::bigint AS checks, sum(ok)::bigint AS ok,
           sum(failed)::bigint AS failed, sum(non_2xx)::bigint AS non_2xx,
           coalesce(sum(checks) FILTER (WHERE bi IS NOT NULL), 0)::bigint AS rt_count,
           sum(rt_sum)::float8 AS rt_sum, min(rt_min) AS rt_min, max(rt_max) AS rt_max,
           min(cert_days_min) AS cert_days_min,
           array_agg(bi ORDER BY bi) FILTER (WHERE bi IS NOT NULL) AS idx,
           array_agg(checks ORDER BY bi) FILTER (WHERE bi IS NOT NULL) AS cnt
    FROM fine GROUP BY 1, 2
), fresh AS (
    SELECT g.url_id, g.bucket, g.checks, g.ok, g.failed, g.non_2xx, g.rt_count, g.rt_sum, g.rt_min, g.rt_max,
           coalesce((SELECT array_agg(coalesce(g.cnt[array_position(g.idx, i)], 0)::integer ORDER BY i)
                     FROM generate_series(0, g.idx[array_length(g.idx, 1)]) AS i), '{}') AS rt_hist,
           g.cert_days_min
    FROM grouped g
), written AS (
    INSERT INTO rollup_hour AS r (url_id, bucket, checks, ok, failed, non_2xx, rt_count, rt_sum, rt_min, rt_max,
                                  rt_hist, cert_days_min)
    SELECT * FROM fresh
    ON CONFLICT (url_id, bucket) DO UPDATE SET
        checks = EXCLUDED.checks, ok = EXCLUDED.ok, failed = EXCLUDED.failed, non_2xx = EXCLUDED.non_2xx,
        rt_count = EXCLUDED.rt_count, rt_sum = EXCLUDED.rt_sum, rt_min = EXCLUDED.rt_min,
        rt_max = EXCLUDED.rt_max, rt_hist = EXCLUDED.rt_hist, cert_days_min = EXCLUDED.cert_days_min
    RETURNING 1
), stale AS (
    DELETE FROM rollup_hour r
    WHERE r.bucket >= %(from)s AND r.bucket < %(to)s AND r.url_id >= %(lo)s AND r.url_id < %(hi)s
      AND NOT EXISTS (SELECT 1 FROM rollup_stage f WHERE f.url_id = r.url_id AND f.bucket = r.bucket
                      -- the range again, so that only its partitions are read
                      AND f.url_id >= %(lo)s AND f.url_id < %(hi)s)
    RETURNING 1
)
SELECT (SELECT count(*) FROM written), (SELECT count(*) FROM stale);

-- name: rollup_stage_drop
DROP TABLE IF EXISTS pg_temp.rollup_stage;

-- name: rollup_days
-- Recompute the daily rollups of URLs [lo, hi) in [from, to) (whole UTC days) from the
-- hourly ones (exact: counts and sums add, min/max combine, histograms add element-wise)
-- and overwrite them.
WITH hour AS (
    SELECT * FROM rollup_hour
    WHERE bucket >= %(from)s AND bucket < %(to)s AND url_id >= %(lo)s AND url_id < %(hi)s
), hist AS (
    SELECT url_id, day, array_agg(c ORDER BY i) AS rt_hist
    FROM (SELECT h.url_id, date_trunc('day', h.bucket, 'UTC') AS day, u.i, sum(u.c)::integer AS c
          FROM hour h, unnest(h.rt_hist) WITH ORDINALITY AS u(c, i)
          GROUP BY 1, 2, 3) AS cell
    GROUP BY 1, 2
), fresh AS (
    SELECT h.url_id, date_trunc('day', h.bucket, 'UTC') AS bucket, sum(h.checks)::bigint AS checks,
           sum(h.ok)::bigint AS ok, sum(h.failed)::bigint AS failed, sum(h.non_2xx)::bigint AS non_2xx,
           sum(h.rt_count)::bigint AS rt_count,
           sum(h.rt_sum::numeric)::float8 AS rt_sum, min(h.rt_min) AS rt_min, max(h.rt_max) AS rt_max,
           min(h.cert_days_min) AS cert_days_min
    FROM hour h GROUP BY 1, 2
), written AS (
    INSERT INTO rollup_day AS r (url_id, bucket, checks, ok, failed, non_2xx, rt_count, rt_sum, rt_min, rt_max,
                                 rt_hist, cert_days_min)
    SELECT f.url_id, f.bucket, f.checks, f.ok, f.failed, f.non_2xx, f.rt_count, f.rt_sum, f.rt_min, f.rt_max,
           coalesce(x.rt_hist, '{}'), f.cert_days_min
    FROM fresh f LEFT JOIN hist x ON x.url_id = f.url_id AND x.day = f.bucket
    ON CONFLICT (url_id, bucket) DO UPDATE SET
        checks = EXCLUDED.checks, ok = EXCLUDED.ok, failed = EXCLUDED.failed, non_2xx = EXCLUDED.non_2xx,
        rt_count = EXCLUDED.rt_count, rt_sum = EXCLUDED.rt_sum, rt_min = EXCLUDED.rt_min,
        rt_max = EXCLUDED.rt_max, rt_hist = EXCLUDED.rt_hist, cert_days_min = EXCLUDED.cert_days_min
    RETURNING 1
), stale AS (
    DELETE FROM rollup_day r
    WHERE r.bucket >= %(from)s AND r.bucket < %(to)s AND r.url_id >= %(lo)s AND r.url_id < %(hi)s
      AND NOT EXISTS (SELECT 1 FROM fresh f WHERE f.url_id = r.url_id AND f.bucket = r.bucket)
    RETURNING 1
)
SELECT (SELECT count(*) FROM written), (SELECT count(*) FROM stale);

-- name: complete_before
-- The instant before which every slot that will ever have a result has it: the oldest slot
-- still outstanding (a task: claimed or not, maybe held in a consumer's memory while the
-- database was away) and the oldest slot not yet enqueued (url.next_check_at), and no later
-- than now minus the grace window. Read in the same snapshot as the raw rows it vouches for.
SELECT least(now() - make_interval(secs => %(grace_s)s),
             (SELECT min(scheduled_at) FROM task),
             (SELECT min(next_check_at) FROM url));

-- name: checks_behind
-- How long the oldest claimable task has waited (0: none waits): the consumers are behind
-- when it is more than a moment. The maintenance job asks on a connection of its own, outside
-- its long REPEATABLE READ transactions, whose snapshot would show tasks claimed since.
-- Only the tasks this host's consumers claim (its region's and those without one): another
-- region's tasks waiting for a host of theirs say nothing of this host's consumers.
-- And how long the oldest due cursor has waited: while the consumers are a batch behind, the
-- producer holds the due URLs back (run/producer.py), so the wait shows there, not in the queue.
SELECT coalesce(extract(epoch FROM now() - least(
           (SELECT min(available_at) FROM task WHERE region = '' AND available_at <= now()),
           (SELECT min(available_at) FROM task WHERE region = %(region)s AND available_at <= now()),
           (SELECT min(next_check_at) FROM url WHERE next_check_at <= now()))),
       0)::float8;

-- name: oldest_result
-- Where the first rollup starts: the oldest raw row (once, when the watermark is still unset).
SELECT min(scheduled_at) FROM task_result;

-- name: longest_timeout
-- The longest check timeout of any URL, for the grace window.
SELECT coalesce(max(timeout), 0) FROM url;

-- name: frontier
-- Where rollups end and raw rows take over: hourly rollups are final before the hour
-- watermark, daily ones before the day watermark (null: nothing rolled up yet); and the
-- hour the uptime summary was built at and its `until` (null: none).
SELECT (SELECT done_until FROM rollup_watermark WHERE level = 'hour'),
       (SELECT done_until FROM rollup_watermark WHERE level = 'day'), now(),
       (SELECT anchor FROM uptime_summary_state), (SELECT until FROM uptime_summary_state);

-- name: window_counts
-- ok and failed per URL for several windows at once, from three disjoint sources read once
-- each: whole days from rollup_day, the remaining whole hours before the hour watermark from
-- rollup_hour, raw rows after it. One pair of FILTERed sums per window and source:
-- {day_sums}, {hour_sums}, {raw_sums} and the range conditions {hour_ranges} are filled in by
-- uptime.py from the window list (w0, w1, ...: parameters w0_start, w0_day_from, w0_day_to,
-- w0_hour_to). %(all)s true: every URL (no id list to hash).
SELECT url_id, {totals}
FROM (
    SELECT url_id, {day_sums}
    FROM rollup_day
    WHERE bucket >= %(day_min)s AND bucket < %(day_max)s AND (%(all)s OR url_id = ANY (%(ids)s))
    GROUP BY url_id
    UNION ALL
    SELECT url_id, {hour_sums}
    FROM rollup_hour
    WHERE ({hour_ranges}) AND (%(all)s OR url_id = ANY (%(ids)s))
    GROUP BY url_id
    UNION ALL
    SELECT url_id, {raw_sums}
    FROM task_result LEFT JOIN maintenance_ranges(%(raw_from)s, %(raw_until)s) USING (url_id)
    WHERE scheduled_at >= %(raw_from)s AND scheduled_at < %(raw_until)s AND (%(all)s OR url_id = ANY (%(ids)s))
    GROUP BY url_id
) AS parts
GROUP BY url_id;

-- name: window_histogram
-- Response-time histogram cells (URL, bucket index, count) over [start, raw_until): hourly
-- rollups before hour_to, raw rows after it.
SELECT url_id, i, sum(c)::bigint
FROM (
    SELECT h.url_id, u.i - 1 AS i, u.c
    FROM rollup_hour h, unnest(h.rt_hist) WITH ORDINALITY AS u(c, i)
    WHERE (%(all)s OR h.url_id = ANY (%(ids)s)) AND h.bucket >= %(start)s AND h.bucket < %(hour_to)s AND u.c > 0
    UNION ALL
    SELECT url_id, {bucket}, 1
    FROM task_result
    WHERE (%(all)s OR url_id = ANY (%(ids)s)) AND scheduled_at >= greatest(%(start)s, %(hour_to)s)
      AND scheduled_at < %(raw_until)s AND response_time_ms IS NOT NULL
) AS cells
GROUP BY 1, 2;

-- name: url_periods
-- Period and creation time (seconds since the epoch) of the URLs still monitored, for
-- expected slots.
SELECT id, period, extract(epoch FROM created_at)::float8 FROM url WHERE %(all)s OR id = ANY (%(ids)s);

-- name: status_urls
-- The URLs `status` shows (the ids given, or all), in URL order, with what expected slots
-- need: period and creation time (seconds since the epoch).
SELECT id, url, period, extract(epoch FROM created_at)::float8, name FROM url WHERE %(all)s OR id = ANY (%(ids)s)
ORDER BY url COLLATE "C", name COLLATE "C" NULLS FIRST;      -- code point order, as status_lines sorts them

-- name: latest_results
-- Each URL's latest result: an index probe on (url_id, scheduled_at) of the last day's
-- partitions only (bounds on now() prune the others, future ones included), and only for a
-- URL with no result in that day a probe of every partition (LIMIT 1 over UNION ALL stops
-- at the first branch that has a row).
SELECT i.url_id, r.error_kind, r.error, r.cert_days_left
FROM unnest(%(ids)s::bigint[]) AS i(url_id)
CROSS JOIN LATERAL (
    (SELECT error_kind, error, cert_days_left FROM task_result t
     WHERE t.url_id = i.url_id AND t.scheduled_at >= now() - interval '1 day'
       AND t.scheduled_at <= now() + interval '1 hour'
     ORDER BY t.scheduled_at DESC LIMIT 1)
    UNION ALL
    (SELECT error_kind, error, cert_days_left FROM task_result t
     WHERE t.url_id = i.url_id ORDER BY t.scheduled_at DESC LIMIT 1)
    LIMIT 1
) AS r;

-- name: latest_results_recent
-- Every URL's latest result if it is in the last few minutes: one scan of those minutes'
-- rows instead of one index probe per URL (status of 100,000 URLs). The window is twice the
-- longest period plus a minute, at most 15 minutes, so it holds about two results per URL
-- whatever the periods; latest_results answers for the URLs it misses.
SELECT DISTINCT ON (url_id) url_id, error_kind, error, cert_days_left
FROM task_result
WHERE scheduled_at >= now() - least(interval '15 minutes',
                                    (SELECT coalesce(max(period), 0) * 2 + 60 FROM url) * interval '1 second')
  AND scheduled_at <= now() + interval '1 hour'
ORDER BY url_id, scheduled_at DESC;

-- name: degraded_24h
-- The fraction of each URL's results of the last 24 hours that were degraded (lost slots left
-- out). Only a URL with `degraded` expressions can have degraded results, so only those are
-- read (index probes on (url_id, scheduled_at)); the others are 0.
SELECT t.url_id, (count(*) FILTER (WHERE t.degraded))::float8 / count(*)
FROM url u JOIN task_result t ON t.url_id = u.id AND t.scheduled_at >= now() - interval '24 hours'
WHERE cardinality(u.degraded) > 0 AND (%(all)s OR u.id = ANY (%(ids)s)) AND t.error_kind IS DISTINCT FROM 'lost'
GROUP BY t.url_id;

-- name: url_state
-- The alerts' state of each URL, or `maintenance` while a maintenance window covers it.
SELECT s.url_id, CASE WHEN u.url LIKE ANY (ARRAY(SELECT maintenance_now())) THEN 'maintenance' ELSE s.state END,
       s.since
FROM url_state s JOIN url u ON u.id = s.url_id WHERE %(all)s OR s.url_id = ANY (%(ids)s);

-- name: hourly_bar
-- One URL's ok/failed per UTC hour over [start, now): rollup_hour before the hour watermark,
-- raw rows after it.
SELECT bucket, ok, failed FROM rollup_hour
WHERE url_id = %(id)s AND bucket >= %(start)s AND bucket < %(hour_to)s
UNION ALL
SELECT date_trunc('hour', scheduled_at, 'UTC'), count(*) FILTER (WHERE ok AND outside_maintenance(ranges, scheduled_at)),
       count(*) FILTER (WHERE NOT ok AND error_kind IS DISTINCT FROM 'lost' AND outside_maintenance(ranges, scheduled_at))
FROM task_result LEFT JOIN maintenance_ranges(greatest(%(start)s, %(hour_to)s), 'infinity') USING (url_id)
WHERE url_id = %(id)s AND scheduled_at >= greatest(%(start)s, %(hour_to)s)
GROUP BY 1;

-- name: last_failures
-- One URL's latest failed results.
SELECT scheduled_at, status_code, error_kind, error FROM task_result
WHERE url_id = %(id)s AND NOT ok ORDER BY scheduled_at DESC LIMIT %(limit)s;

-- name: raw_history
-- One URL's raw results in [since, until), oldest first (a slot's regions in name order), of
-- one region only when %(region)s is not null.
SELECT scheduled_at, started_at, response_time_ms, status_code, regex_matched, ok, error_kind, error,
       cert_days_left, degraded, dns_ms, connect_ms, tls_ms, first_byte_ms, message, region
FROM task_result WHERE url_id = %(id)s AND scheduled_at >= %(since)s AND scheduled_at < %(until)s
  AND (%(region)s::text IS NULL OR region = %(region)s)
ORDER BY scheduled_at, region;

-- name: hourly_history
-- One URL's hourly rollups in [since, until), oldest first (for times raw rows no longer cover).
SELECT bucket, checks, ok, failed, rt_count, rt_sum, cert_days_min FROM rollup_hour
WHERE url_id = %(id)s AND bucket >= %(since)s AND bucket < %(until)s ORDER BY bucket;

-- name: summary_state
SELECT anchor, until FROM uptime_summary_state;

-- name: summary_set_state
INSERT INTO uptime_summary_state AS s (anchor, until, built_at, updated_at)
VALUES (%(anchor)s, %(until)s, now(), now())
ON CONFLICT (one) DO UPDATE SET anchor = EXCLUDED.anchor, until = EXCLUDED.until, updated_at = now(),
    built_at = CASE WHEN s.anchor = EXCLUDED.anchor THEN s.built_at ELSE now() END;

-- name: summary_stage_create
-- A build's rows, before they replace the summary (summary.py _build): this session's own.
DROP TABLE IF EXISTS pg_temp.summary_stage;
CREATE TEMP TABLE summary_stage (LIKE uptime_summary);

-- name: summary_stage_swap
-- The built rows replace the summary in the build's last transaction (summary_set_state
-- follows in it), with no rest: the one part of a build the pace cannot cut (100,000 rows;
-- in the soak on this code no statement of any connection took over 1.6 s after minute 1).
DELETE FROM uptime_summary;
INSERT INTO uptime_summary SELECT * FROM pg_temp.summary_stage;
DROP TABLE pg_temp.summary_stage;

-- name: summary_add
-- Add the raw rows of [from, to) of URLs [lo, hi) to the uptime summary: they are inside
-- every window, so each window's counts grow by them, and the cumulative 24 h histogram by
-- the number of them at or below each bucket (width_bucket over their sorted bucket indexes
-- counts them). One INSERT ... ON CONFLICT: each URL's row is found by the primary key's
-- own probe, whatever the planner believes of the table (an UPDATE then an INSERT of the
-- rest needed an anti-join, which on a freshly built summary, with no statistics, became a
-- nested loop over the whole table for each URL: 419 s for 100,000 URLs, issue 18). The
-- new rows' histogram is itself cumulative, so adding two is one pass over the union of
-- their buckets. Only the maintenance job writes the summary (under its lock).
WITH delta AS (
    SELECT url_id, count(*) FILTER (WHERE ok AND counted) AS ok,
           count(*) FILTER (WHERE NOT ok AND error_kind IS DISTINCT FROM 'lost' AND counted) AS failed,
           coalesce(array_agg(bi ORDER BY bi) FILTER (WHERE bi IS NOT NULL), '{}') AS sorted,
           min(bi) AS lo, max(bi) AS hi             -- null: no response time in the rows
    FROM (SELECT url_id, ok, error_kind, {bucket} AS bi, outside_maintenance(ranges, scheduled_at) AS counted
          FROM task_result LEFT JOIN maintenance_ranges(%(from)s, %(to)s) USING (url_id)
          WHERE scheduled_at >= %(from)s AND scheduled_at < %(to)s
            AND url_id >= %(lo)s AND url_id < %(hi)s) AS raw
    GROUP BY url_id
)
INSERT INTO uptime_summary AS s (url_id, ok_24h, failed_24h, ok_7d, failed_7d, ok_30d, failed_30d, hist_from,
                                 cum_24h)
SELECT d.url_id, d.ok, d.failed, d.ok, d.failed, d.ok, d.failed, coalesce(d.lo, 0),
       coalesce(ARRAY(SELECT width_bucket(i, d.sorted) FROM generate_series(d.lo, d.hi) AS i ORDER BY i), '{}')
FROM delta d
ON CONFLICT (url_id) DO UPDATE SET
    ok_24h = s.ok_24h + EXCLUDED.ok_24h, failed_24h = s.failed_24h + EXCLUDED.failed_24h,
    ok_7d = s.ok_7d + EXCLUDED.ok_7d, failed_7d = s.failed_7d + EXCLUDED.failed_7d,
    ok_30d = s.ok_30d + EXCLUDED.ok_30d, failed_30d = s.failed_30d + EXCLUDED.failed_30d,
    -- (SET expressions all see the old row.) A cumulative histogram is 0 below its hist_from
    -- and stays at its total past its end: the sum of two is the sum of those, bucket by bucket.
    hist_from = CASE WHEN cardinality(EXCLUDED.cum_24h) = 0 THEN s.hist_from
                     WHEN cardinality(s.cum_24h) = 0 THEN EXCLUDED.hist_from
                     ELSE least(s.hist_from, EXCLUDED.hist_from) END,
    cum_24h = CASE WHEN cardinality(EXCLUDED.cum_24h) = 0 THEN s.cum_24h
                   WHEN cardinality(s.cum_24h) = 0 THEN EXCLUDED.cum_24h ELSE ARRAY(
        SELECT (CASE WHEN i < s.hist_from THEN 0
                     ELSE s.cum_24h[least(i - s.hist_from + 1, cardinality(s.cum_24h))] END
                + CASE WHEN i < EXCLUDED.hist_from THEN 0
                       ELSE EXCLUDED.cum_24h[least(i - EXCLUDED.hist_from + 1, cardinality(EXCLUDED.cum_24h))] END
               )::integer
        FROM generate_series(least(s.hist_from, EXCLUDED.hist_from),
                             greatest(s.hist_from + cardinality(s.cum_24h),
                                      EXCLUDED.hist_from + cardinality(EXCLUDED.cum_24h)) - 1) AS i
        ORDER BY i) END;

-- name: summary_read
-- Each URL's summary counts plus those of the raw rows from the summary's `until` on (inside
-- every window, as summary.usable() makes sure), its 24 h histogram, and the histogram
-- buckets of those raw rows (up to about two minutes of them: one to three per URL), in one
-- statement, so the state and the rows it describes come from one snapshot. until_hint is
-- `until` as read just before (it only moves forward, so never later than the one read
-- here): a constant that shows the planner how few raw rows follow it.
WITH recent AS (
    SELECT url_id, count(*) FILTER (WHERE ok AND outside_maintenance(ranges, scheduled_at)) AS ok,
           count(*) FILTER (WHERE NOT ok AND error_kind IS DISTINCT FROM 'lost'
                            AND outside_maintenance(ranges, scheduled_at)) AS failed,
           array_agg({bucket}) FILTER (WHERE response_time_ms IS NOT NULL) AS buckets
    FROM task_result LEFT JOIN maintenance_ranges(%(until_hint)s, 'infinity') USING (url_id)
    WHERE scheduled_at >= (SELECT until FROM uptime_summary_state) AND scheduled_at >= %(until_hint)s
      AND (%(all)s OR url_id = ANY (%(ids)s))
    GROUP BY url_id
)
SELECT coalesce(s.url_id, r.url_id),
       coalesce(s.ok_24h, 0) + coalesce(r.ok, 0), coalesce(s.failed_24h, 0) + coalesce(r.failed, 0),
       coalesce(s.ok_7d, 0) + coalesce(r.ok, 0), coalesce(s.failed_7d, 0) + coalesce(r.failed, 0),
       coalesce(s.ok_30d, 0) + coalesce(r.ok, 0), coalesce(s.failed_30d, 0) + coalesce(r.failed, 0),
       coalesce(s.hist_from, 0), s.cum_24h, r.buckets
FROM (SELECT * FROM uptime_summary WHERE %(all)s OR url_id = ANY (%(ids)s)) AS s
FULL JOIN recent AS r ON r.url_id = s.url_id;

-- name: status_lines
-- `sitewatch status` of many URLs in one statement, while the uptime summary is usable and
-- no window lags it (report.py): each URL's figures by the rules of history/uptime.py
-- (Counts.plain_rows), computed here so that Python only writes the lines. Per URL: the
-- summary's counts plus those of the raw rows from its `until` on (as summary_read), the
-- uptime of each window in truncated units of 0.001 %% (integer division), the 24 h
-- coverage, and the p95 bucket: the first bucket where the running count reaches the rank
-- ceil(0.95 n). Over the summary's cumulative histogram alone that is one binary search
-- (width_bucket); with the raw rows' buckets b_1 <= .. <= b_k as well it is the least of
-- greatest(b_m, the first bucket where the summary's count reaches rank - m), m = 0..k
-- (inline for k <= 3, the most raw rows a URL checked every 60 s has after `until`: see
-- summary.ADD_EVERY; else a subquery). {line} is
-- status_line_json (the JSON object) or status_line_table (the table's columns after the
-- URL). The URLs with ids in [id_from, id_to): report.py asks for two halves on two
-- connections.
WITH recent AS (
    SELECT url_id, count(*) FILTER (WHERE ok AND counted) AS ok,
           count(*) FILTER (WHERE NOT ok AND error_kind IS DISTINCT FROM 'lost' AND counted) AS failed,
           coalesce(array_agg(bi ORDER BY bi) FILTER (WHERE bi IS NOT NULL), '{}') AS buckets
    FROM (SELECT url_id, ok, error_kind, {bucket} AS bi, outside_maintenance(ranges, scheduled_at) AS counted
          FROM task_result LEFT JOIN maintenance_ranges(%(until_hint)s, 'infinity') USING (url_id)
          WHERE scheduled_at >= (SELECT until FROM uptime_summary_state) AND scheduled_at >= %(until_hint)s
            AND (%(all)s OR url_id = ANY (%(ids)s)) AND url_id >= %(id_from)s AND url_id < %(id_to)s) AS raw
    GROUP BY url_id
), latest AS (      -- as latest_results_recent
    SELECT DISTINCT ON (url_id) url_id, error_kind, error, cert_days_left
    FROM task_result
    WHERE scheduled_at >= now() - least(interval '15 minutes',
                                        (SELECT coalesce(max(period), 0) * 2 + 60 FROM url) * interval '1 second')
      AND scheduled_at <= now() + interval '1 hour' AND (%(all)s OR url_id = ANY (%(ids)s))
      AND url_id >= %(id_from)s AND url_id < %(id_to)s
    ORDER BY url_id, scheduled_at DESC
), older AS (      -- the few URLs with none in those minutes: their latest result, by index probes
    SELECT u.id AS url_id, t.error_kind, t.error, t.cert_days_left
    FROM url u
    CROSS JOIN LATERAL (SELECT error_kind, error, cert_days_left FROM task_result t WHERE t.url_id = u.id
                        ORDER BY t.scheduled_at DESC LIMIT 1) AS t
    WHERE (%(all)s OR u.id = ANY (%(ids)s)) AND u.id >= %(id_from)s AND u.id < %(id_to)s
      AND NOT EXISTS (SELECT 1 FROM latest l WHERE l.url_id = u.id)
), degraded AS (      -- as degraded_24h
    SELECT t.url_id, (count(*) FILTER (WHERE t.degraded))::float8 / count(*) AS fraction
    FROM url u JOIN task_result t ON t.url_id = u.id AND t.scheduled_at >= now() - interval '24 hours'
    WHERE cardinality(u.degraded) > 0 AND (%(all)s OR u.id = ANY (%(ids)s))
      AND u.id >= %(id_from)s AND u.id < %(id_to)s AND t.error_kind IS DISTINCT FROM 'lost'
    GROUP BY t.url_id
), counted AS (
    SELECT u.id, u.url, u.name, floor((%(now)s - greatest(%(start_24h)s, extract(epoch FROM u.created_at)::float8))
                              / u.period)::bigint AS expected,
           coalesce(s.ok_24h, 0) + coalesce(r.ok, 0) AS ok_24h, coalesce(s.failed_24h, 0) + coalesce(r.failed, 0) AS failed_24h,
           coalesce(s.ok_7d, 0) + coalesce(r.ok, 0) AS ok_7d, coalesce(s.failed_7d, 0) + coalesce(r.failed, 0) AS failed_7d,
           coalesce(s.ok_30d, 0) + coalesce(r.ok, 0) AS ok_30d, coalesce(s.failed_30d, 0) + coalesce(r.failed, 0) AS failed_30d,
           coalesce(s.hist_from, 0) AS hist_from, coalesce(s.cum_24h, '{}') AS cum,
           coalesce(r.buckets, '{}') AS buckets
    FROM url u
    LEFT JOIN uptime_summary s ON s.url_id = u.id
    LEFT JOIN recent r ON r.url_id = u.id
    WHERE (%(all)s OR u.id = ANY (%(ids)s)) AND u.id >= %(id_from)s AND u.id < %(id_to)s
), ranked AS (
    SELECT c.*, (95 * n + 99) / 100 AS rank, n
    FROM counted c, LATERAL (SELECT coalesce(c.cum[cardinality(c.cum)], 0) + cardinality(c.buckets) AS n) AS total
), figured AS (
    SELECT id, url, name, ok_24h + failed_24h AS results, expected,
           CASE WHEN ok_24h + failed_24h > 0 THEN ok_24h * 100000 / (ok_24h + failed_24h) END AS units_24h,
           CASE WHEN ok_7d + failed_7d > 0 THEN ok_7d * 100000 / (ok_7d + failed_7d) END AS units_7d,
           CASE WHEN ok_30d + failed_30d > 0 THEN ok_30d * 100000 / (ok_30d + failed_30d) END AS units_30d,
           CASE WHEN n = 0 THEN NULL
                WHEN cardinality(buckets) <= 3 THEN least(
                    CASE WHEN width_bucket(rank - 1, cum) < cardinality(cum) THEN hist_from + width_bucket(rank - 1, cum) END,
                    CASE WHEN cardinality(buckets) < 1 THEN NULL WHEN rank <= 1 THEN buckets[1]
                         WHEN width_bucket(rank - 2, cum) < cardinality(cum)
                         THEN greatest(buckets[1], hist_from + width_bucket(rank - 2, cum)) END,
                    CASE WHEN cardinality(buckets) < 2 THEN NULL WHEN rank <= 2 THEN buckets[2]
                         WHEN width_bucket(rank - 3, cum) < cardinality(cum)
                         THEN greatest(buckets[2], hist_from + width_bucket(rank - 3, cum)) END,
                    CASE WHEN cardinality(buckets) < 3 THEN NULL WHEN rank <= 3 THEN buckets[3]
                         WHEN width_bucket(rank - 4, cum) < cardinality(cum)
                         THEN greatest(buckets[3], hist_from + width_bucket(rank - 4, cum)) END)
                ELSE (SELECT min(x) FROM (
                    SELECT CASE WHEN width_bucket(rank - 1, cum) < cardinality(cum)
                                THEN hist_from + width_bucket(rank - 1, cum) END AS x
                    UNION ALL
                    SELECT CASE WHEN rank <= m THEN b WHEN width_bucket(rank - 1 - m, cum) < cardinality(cum)
                                THEN greatest(b, hist_from + width_bucket(rank - 1 - m, cum)) END
                    FROM unnest(buckets) WITH ORDINALITY AS t(b, m)) AS candidates) END AS p95_bucket
    FROM ranked
)
SELECT f.id, f.url, f.name, {line}
FROM figured f
LEFT JOIN url_state st ON st.url_id = f.id
LEFT JOIN latest l ON l.url_id = f.id
LEFT JOIN older old ON old.url_id = f.id
LEFT JOIN degraded dg ON dg.url_id = f.id
WHERE NOT %(down)s OR st.state = 'down';      -- report.py sorts the lines (faster there)

-- name: median_url_id
-- Where status_lines splits the URLs in two halves (null: no URL).
SELECT id FROM url ORDER BY id OFFSET (SELECT count(*) / 2 FROM url) LIMIT 1;

-- name: status_line_json
-- The JSON object of a status line (report.py redacts the URLs that may hold a secret: it
-- replaces what comes before ', "name": ', which cannot occur inside the encoded URL).
-- Concatenated rather than json_build_object (twice as fast); text goes through to_json.
concat('{"url": ', to_json(f.url), ', "name": ', coalesce(to_json(f.name)::text, 'null'), ', "state": ', to_json(
        CASE WHEN f.url LIKE ANY (ARRAY(SELECT maintenance_now())) THEN 'maintenance' ELSE coalesce(st.state, 'unknown') END),
    ', "since": ', coalesce(to_json(st.since)::text, 'null'),
    ', "uptime_24h": ', coalesce((f.units_24h::float8 / 100000)::text, 'null'),
    ', "uptime_7d": ', coalesce((f.units_7d::float8 / 100000)::text, 'null'),
    ', "uptime_30d": ', coalesce((f.units_30d::float8 / 100000)::text, 'null'),
    ', "coverage_24h": ', CASE WHEN f.expected <= 0 THEN 'null' WHEN f.results < f.expected
                              THEN (f.results::float8 / f.expected)::text ELSE '1.0' END,
    ', "p95_ms_24h": ', coalesce(((%(p95_values)s::float8[])[f.p95_bucket + 1])::text, 'null'),
    ', "last_error_kind": ', coalesce(to_json(coalesce(l.error_kind, old.error_kind))::text, 'null'),
    ', "last_error": ', coalesce(to_json(coalesce(l.error, old.error))::text, 'null'),
    ', "cert_days_left": ', coalesce(coalesce(l.cert_days_left, old.cert_days_left)::text, 'null'),
    ', "degraded_24h": ', coalesce(dg.fraction::text, CASE WHEN f.results > 0 THEN '0.0' ELSE 'null' END), '}')

-- name: status_line_table
-- A line of the status table after its URL column (report.py pads the URL).
format('%%-11s %%-16s %%8s %%8s %%8s %%7s %%8s %%5s  %%s',
    CASE WHEN f.url LIKE ANY (ARRAY(SELECT maintenance_now())) THEN 'maintenance' ELSE coalesce(st.state, 'unknown') END, coalesce(to_char(st.since, 'YYYY-MM-DD HH24:MI'), '-'),
    CASE WHEN f.units_24h IS NULL THEN '-' ELSE (f.units_24h / 1000) || '.' || lpad((f.units_24h %% 1000)::text, 3, '0') || '%%' END,
    CASE WHEN f.units_7d IS NULL THEN '-' ELSE (f.units_7d / 1000) || '.' || lpad((f.units_7d %% 1000)::text, 3, '0') || '%%' END,
    CASE WHEN f.units_30d IS NULL THEN '-' ELSE (f.units_30d / 1000) || '.' || lpad((f.units_30d %% 1000)::text, 3, '0') || '%%' END,
    CASE WHEN f.expected <= 0 THEN '-' WHEN f.results < f.expected
         THEN (f.results * 100 / f.expected) || '%%' ELSE '100%%' END,     -- integers: 29/100 is 29%%, not 28%%
    coalesce((%(p95_texts)s::text[])[f.p95_bucket + 1], '-'),
    coalesce(coalesce(l.cert_days_left, old.cert_days_left) || 'd', '-'),
    CASE WHEN coalesce(l.error_kind, old.error_kind) <> ''
         THEN coalesce(l.error_kind, old.error_kind) || ': '    -- errors stored before they were made printable: controls as spaces
              || regexp_replace(coalesce(l.error, old.error, ''), '[[:cntrl:]]', ' ', 'g') ELSE '' END)

-- name: summary_lag_counts
-- While the hourly watermark lags the clock: ok and failed of the hours that have left a
-- window since the summary was built, [anchor - window + 1 hour, start), to subtract.
SELECT url_id, sum(ok)::bigint, sum(failed)::bigint
FROM rollup_hour
WHERE bucket >= %(anchor)s - %(length)s + interval '1 hour' AND bucket < %(start)s
  AND (%(all)s OR url_id = ANY (%(ids)s))
GROUP BY url_id;

-- name: summary_lag_histograms
-- The same for the 24 h latency histogram: those hours' arrays.
SELECT url_id, rt_hist
FROM rollup_hour
WHERE bucket >= %(anchor)s - interval '23 hours' AND bucket < %(start)s AND (%(all)s OR url_id = ANY (%(ids)s));

-- name: regions_in_use
-- Whether any host ever ran with a region (its heartbeats: a region's newest row is never
-- pruned, alerts/queries.sql announce_absent_regions). Without one no result has a region:
-- the rollup skips rollup_region_hour altogether (one probe of an empty table).
SELECT EXISTS (SELECT 1 FROM region_host);

-- name: rollup_region_clear
-- The region rollups of [from, to) go before they are computed again (rollup_region_slice
-- adds to them slice by slice), in the rollup's transaction.
DELETE FROM rollup_region_hour WHERE bucket >= %(from)s AND bucket < %(to)s;

-- name: rollup_region_slice
-- The raw rows with a region of one time slice [from, to) into rollup_region_hour (migration
-- 0017): per (URL, region, hour) the region's checks, ok and failed; and per (URL, '', hour)
-- the URL's slots, each up or failed by its down_when (%(down_when)s, alerts.down_when, when
-- the URL has none) over the regions that reported for it. A slot's rows share scheduled_at,
-- so no slice splits one; an hour split over slices adds up (ON CONFLICT).
WITH slot AS (
    SELECT t.url_id, t.scheduled_at, t.region, t.ok, t.error_kind IS NOT DISTINCT FROM 'lost' AS lost,
           outside_maintenance(m.ranges, t.scheduled_at) AS counted
    FROM task_result t LEFT JOIN maintenance_ranges(%(from)s, %(to)s) AS m USING (url_id)
    WHERE t.scheduled_at >= %(from)s AND t.scheduled_at < %(to)s AND t.region <> ''
), quorum AS (
    SELECT s.url_id, s.scheduled_at, bool_and(s.counted) AS counted,
           history_slot_failed(coalesce(min(u.down_when), %(down_when)s), count(*) FILTER (WHERE NOT s.lost),
                               count(*) FILTER (WHERE NOT s.ok AND NOT s.lost)) AS failed
    FROM slot s LEFT JOIN url u ON u.id = s.url_id
    GROUP BY s.url_id, s.scheduled_at
    -- slots of the URL's schedule only: a confirmation check (off the grid t0 + kP, often from
    -- the failing region alone) counts in its region's figure, not as a slot of the URL
    HAVING mod(floor(extract(epoch FROM s.scheduled_at - min(u.next_check_at)) * 1000000)::bigint,
               min(u.period)::bigint * 1000000) = 0
)
INSERT INTO rollup_region_hour AS r (url_id, region, bucket, checks, ok, failed)
SELECT url_id, region, date_trunc('hour', scheduled_at, 'UTC'), count(*),
       count(*) FILTER (WHERE ok AND counted), count(*) FILTER (WHERE NOT ok AND NOT lost AND counted)
FROM slot GROUP BY 1, 2, 3
UNION ALL
SELECT url_id, '', date_trunc('hour', scheduled_at, 'UTC'), count(*),
       count(*) FILTER (WHERE NOT failed AND counted), count(*) FILTER (WHERE failed AND counted)
FROM quorum GROUP BY 1, 3
ON CONFLICT (url_id, region, bucket) DO UPDATE SET
    checks = r.checks + EXCLUDED.checks, ok = r.ok + EXCLUDED.ok, failed = r.failed + EXCLUDED.failed;

-- name: rollup_region_days
-- The daily region rollups (migration 0019) of URLs [lo, hi) in [from, to) (whole UTC days):
-- the sums of their hours in rollup_region_hour, overwritten; rows of that range no hour
-- supports any more are deleted (as rollup_days).
WITH fresh AS (
    SELECT url_id, region, date_trunc('day', bucket, 'UTC') AS bucket,
           sum(checks) AS checks, sum(ok) AS ok, sum(failed) AS failed
    FROM rollup_region_hour
    WHERE bucket >= %(from)s AND bucket < %(to)s AND url_id >= %(lo)s AND url_id < %(hi)s
    GROUP BY 1, 2, 3
), written AS (
    INSERT INTO rollup_region_day AS r (url_id, region, bucket, checks, ok, failed)
    SELECT * FROM fresh
    ON CONFLICT (url_id, region, bucket) DO UPDATE SET
        checks = EXCLUDED.checks, ok = EXCLUDED.ok, failed = EXCLUDED.failed
    RETURNING 1
), stale AS (
    DELETE FROM rollup_region_day r
    WHERE r.bucket >= %(from)s AND r.bucket < %(to)s AND r.url_id >= %(lo)s AND r.url_id < %(hi)s
      AND NOT EXISTS (SELECT 1 FROM fresh f WHERE f.url_id = r.url_id AND f.region = r.region
                                                 AND f.bucket = r.bucket)
    RETURNING 1
)
SELECT (SELECT count(*) FROM written), (SELECT count(*) FROM stale);

-- name: region_window_counts
-- Per URL with regions (the ids given, or all) and per region, plus region '' (the URL by the
-- quorum rule, slot by slot): ok and failed in the 24h, 7d and 30d windows, each from the
-- three disjoint sources of uptime.py's window_counts, bounded by windows.py window_bounds
-- (parameters start_W, day_from_W, day_to_W, hour_to_W of each window W): whole days
-- [day_from, day_to) from rollup_region_day, the other hours [start, hour_to) from
-- rollup_region_hour, raw rows from hour_to on, with the same rules as rollup_region_slice.
-- One snapshot: nothing counted twice. A 30-day window reads about 30 day rows and at most
-- about three days of hour rows per (URL, region) instead of 720 hours. Each part is summed
-- per (URL, region) on its own (hash aggregates: a sort of all the hours' rows spilled to
-- disk), joined to the target URLs, then the three are added.
WITH target AS (
    SELECT id, down_when, next_check_at, period FROM url
    WHERE cardinality(regions) > 0 AND (%(all)s OR id = ANY (%(ids)s))
), days AS (
    SELECT r.url_id, r.region,
           sum(r.ok) FILTER (WHERE r.bucket >= %(day_from_24h)s AND r.bucket < %(day_to_24h)s) AS ok_24h,
           sum(r.failed) FILTER (WHERE r.bucket >= %(day_from_24h)s AND r.bucket < %(day_to_24h)s) AS failed_24h,
           sum(r.ok) FILTER (WHERE r.bucket >= %(day_from_7d)s AND r.bucket < %(day_to_7d)s) AS ok_7d,
           sum(r.failed) FILTER (WHERE r.bucket >= %(day_from_7d)s AND r.bucket < %(day_to_7d)s) AS failed_7d,
           sum(r.ok) FILTER (WHERE r.bucket >= %(day_from_30d)s AND r.bucket < %(day_to_30d)s) AS ok_30d,
           sum(r.failed) FILTER (WHERE r.bucket >= %(day_from_30d)s AND r.bucket < %(day_to_30d)s) AS failed_30d
    FROM rollup_region_day r
    WHERE r.bucket >= %(day_min)s AND r.bucket < %(day_max)s AND (%(all)s OR r.url_id = ANY (%(ids)s))
    GROUP BY r.url_id, r.region
), hours AS (
    SELECT r.url_id, r.region,
           sum(r.ok) FILTER (WHERE in_24h) AS ok_24h, sum(r.failed) FILTER (WHERE in_24h) AS failed_24h,
           sum(r.ok) FILTER (WHERE in_7d) AS ok_7d, sum(r.failed) FILTER (WHERE in_7d) AS failed_7d,
           sum(r.ok) FILTER (WHERE in_30d) AS ok_30d, sum(r.failed) FILTER (WHERE in_30d) AS failed_30d
    FROM rollup_region_hour r,
         LATERAL (SELECT r.bucket >= %(start_24h)s AND r.bucket < %(hour_to_24h)s
                         AND NOT (r.bucket >= %(day_from_24h)s AND r.bucket < %(day_to_24h)s) AS in_24h,
                         r.bucket >= %(start_7d)s AND r.bucket < %(hour_to_7d)s
                         AND NOT (r.bucket >= %(day_from_7d)s AND r.bucket < %(day_to_7d)s) AS in_7d,
                         r.bucket >= %(start_30d)s AND r.bucket < %(hour_to_30d)s
                         AND NOT (r.bucket >= %(day_from_30d)s AND r.bucket < %(day_to_30d)s) AS in_30d) AS w
    -- each window's edges only, [start, day_from) and [day_to, hour_to) (an OR of ranges: a
    -- BitmapOr of the bucket index), never the hours of the days read above
    WHERE ((r.bucket >= %(start_24h)s AND r.bucket < least(%(day_from_24h)s, %(hour_to_24h)s))
           OR (r.bucket >= %(day_to_24h)s AND r.bucket < %(hour_to_24h)s)
           OR (r.bucket >= %(start_7d)s AND r.bucket < least(%(day_from_7d)s, %(hour_to_7d)s))
           OR (r.bucket >= %(day_to_7d)s AND r.bucket < %(hour_to_7d)s)
           OR (r.bucket >= %(start_30d)s AND r.bucket < least(%(day_from_30d)s, %(hour_to_30d)s))
           OR (r.bucket >= %(day_to_30d)s AND r.bucket < %(hour_to_30d)s))
      AND (%(all)s OR r.url_id = ANY (%(ids)s))
    GROUP BY r.url_id, r.region
), raw AS (
    SELECT t.url_id, t.scheduled_at, t.region, t.ok, t.error_kind IS NOT DISTINCT FROM 'lost' AS lost,
           outside_maintenance(m.ranges, t.scheduled_at) AS counted, g.down_when,
           mod(floor(extract(epoch FROM t.scheduled_at - g.next_check_at) * 1000000)::bigint,
               g.period::bigint * 1000000) = 0 AS on_grid
    FROM target g JOIN task_result t ON t.url_id = g.id
    LEFT JOIN maintenance_ranges(%(raw_from)s, 'infinity') AS m ON m.url_id = t.url_id
    WHERE t.scheduled_at >= %(raw_from)s AND t.region <> ''
), quorum AS (
    SELECT url_id, scheduled_at, bool_and(counted) AS counted,
           history_slot_failed(coalesce(min(down_when), %(down_when)s), count(*) FILTER (WHERE NOT lost),
                               count(*) FILTER (WHERE NOT ok AND NOT lost)) AS failed
    FROM raw WHERE on_grid GROUP BY url_id, scheduled_at     -- a confirmation is no slot (above)
), recent AS (
    -- a window's raw rows: from its hour_to (never before its start: window_bounds)
    SELECT url_id, region,
           count(*) FILTER (WHERE up AND at >= %(hour_to_24h)s) AS ok_24h,
           count(*) FILTER (WHERE down AND at >= %(hour_to_24h)s) AS failed_24h,
           count(*) FILTER (WHERE up AND at >= %(hour_to_7d)s) AS ok_7d,
           count(*) FILTER (WHERE down AND at >= %(hour_to_7d)s) AS failed_7d,
           count(*) FILTER (WHERE up AND at >= %(hour_to_30d)s) AS ok_30d,
           count(*) FILTER (WHERE down AND at >= %(hour_to_30d)s) AS failed_30d
    FROM (SELECT url_id, region, scheduled_at AS at, ok AND counted AS up, NOT ok AND NOT lost AND counted AS down
          FROM raw
          UNION ALL
          SELECT url_id, '', scheduled_at, NOT failed AND counted, failed AND counted
          FROM quorum WHERE failed IS NOT NULL) AS verdicts
    GROUP BY url_id, region
), parts AS (
    SELECT d.* FROM days d JOIN target g ON g.id = d.url_id
    UNION ALL
    SELECT h.* FROM hours h JOIN target g ON g.id = h.url_id
    UNION ALL
    SELECT * FROM recent
)
SELECT url_id, region,
       coalesce(sum(ok_24h), 0)::bigint, coalesce(sum(failed_24h), 0)::bigint,
       coalesce(sum(ok_7d), 0)::bigint, coalesce(sum(failed_7d), 0)::bigint,
       coalesce(sum(ok_30d), 0)::bigint, coalesce(sum(failed_30d), 0)::bigint
FROM parts
GROUP BY url_id, region;

-- name: region_hourly_history
-- `history --region R` for the time the raw rows no longer cover: R's hourly rollups.
SELECT bucket, checks, ok, failed FROM rollup_region_hour
WHERE url_id = %(id)s AND region = %(region)s AND bucket >= %(since)s AND bucket < %(until)s
ORDER BY bucket;
