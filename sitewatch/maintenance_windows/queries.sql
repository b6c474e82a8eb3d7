-- The maintenance windows' SQL (migration 0014_maintenance.sql). Loaded with db/store.py's loader.

-- name: add_window
INSERT INTO maintenance (pattern, like_pattern, start_local, tz, duration, every, reason)
VALUES (%(pattern)s, %(like_pattern)s, %(start_local)s, %(tz)s, %(duration)s, %(every)s, %(reason)s)
RETURNING id;

-- name: windows
-- Every window, for planning and listing (windows are few), with its occurrence in force now.
SELECT m.id, m.pattern, m.like_pattern, m.start_local, m.tz, m.duration, m.every, m.reason,
       (SELECT max(s.ends_at) FROM silence s WHERE s.maintenance_id = m.id
                                              AND s.starts_at <= now() AND s.ends_at > now()) AS active_until
FROM maintenance m ORDER BY m.id;

-- name: write_occurrences
-- Occurrences as silence rows, once each (the unique key) however many notifiers plan them.
-- One already over (`maintenance add` with a past start) is written settled: it held no notice.
-- The windows' rows are share-locked: a `maintenance remove` running now waits, then deletes
-- what this wrote (or this finds the window gone and writes nothing).
WITH live AS (
    SELECT id, pattern, like_pattern, reason FROM maintenance WHERE id = ANY (%(ids)s) FOR SHARE
)
INSERT INTO silence (pattern, like_pattern, starts_at, ends_at, reason, maintenance_id, settled)
SELECT l.pattern, l.like_pattern, o.starts_at, o.ends_at, l.reason, l.id, o.ends_at <= now()
FROM unnest(%(ids)s::bigint[], %(starts)s::timestamptz[], %(ends)s::timestamptz[]) AS o (id, starts_at, ends_at)
JOIN live l ON l.id = o.id
ON CONFLICT (maintenance_id, starts_at) WHERE maintenance_id IS NOT NULL DO NOTHING;

-- name: delete_window
DELETE FROM maintenance WHERE id = %(id)s RETURNING id, pattern;

-- name: drop_occurrences
-- A removed window: its occurrences to come go; the one in force ends now (the notifier
-- settles it: the notice owed goes out); those over stay for uptime.
WITH dropped AS (
    DELETE FROM silence WHERE maintenance_id = %(id)s AND starts_at > now()
)
UPDATE silence SET ends_at = now()
WHERE maintenance_id = %(id)s AND starts_at <= now() AND ends_at > now();

-- name: in_maintenance
-- Which of these URLs a maintenance occurrence covers now (the page and `status`).
SELECT id FROM url
WHERE id = ANY (%(ids)s)
  AND url LIKE ANY (ARRAY(SELECT like_pattern FROM silence
                          WHERE maintenance_id IS NOT NULL AND starts_at <= now() AND ends_at > now()));
