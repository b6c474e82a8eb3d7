-- Schema version 14: maintenance windows (issue 22, DESIGN.md section 12 "Management"):
-- `sitewatch maintenance add URL|NAME|GLOB --start TIME --duration D [--every ...] [--tz ZONE]`.
--
-- A window is a schedule (this table); each occurrence of it is a `silence` row with
-- maintenance_id set, written ahead of time by sitewatch/maintenance_windows/ (the notifier,
-- and `maintenance add` itself). So the alerts need nothing new: a silence already holds
-- notices while it is in force (starts_at <= now() < ends_at, starts_at in the future is
-- simply not in force yet) and, once over, settle_silences sends the notice owed when the
-- state differs from the last one announced. The result path is untouched: no cost per result.
CREATE TABLE maintenance (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pattern     text NOT NULL,                 -- URL or glob, as `silence` keeps it
    like_pattern text NOT NULL,
    start_local timestamp NOT NULL,            -- wall-clock time in tz of the first occurrence
    tz          text NOT NULL,                 -- IANA zone
    duration    integer NOT NULL CHECK (duration > 0),      -- seconds, elapsed (not wall clock)
    every       text,                          -- null: once; 'day', 'week', or a cron expression
    reason      text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The occurrence a silence row stands for. No foreign key: when a window is removed, its past
-- occurrences stay (uptime keeps excluding them until retention drops them, like raw rows).
ALTER TABLE silence ADD COLUMN maintenance_id bigint;
-- an occurrence is written once however many notifiers plan it
CREATE UNIQUE INDEX silence_maintenance_key ON silence (maintenance_id, starts_at)
    WHERE maintenance_id IS NOT NULL;
CREATE INDEX silence_maintenance_time_idx ON silence (starts_at) WHERE maintenance_id IS NOT NULL;

-- The maintenance occurrences meeting [from_ts, to_ts), as one multirange per URL they cover
-- (a glob is matched against the URLs monitored now). The uptime counts of raw rows
-- (history/queries.sql, web/data.py) LEFT JOIN it USING (url_id) and count a slot only when
-- outside_maintenance(ranges, scheduled_at): one hash probe per raw row, and the containment
-- test only for the URLs a window covers. Few windows x at most every URL: bounded.
-- plpgsql with ROWS 10, not an inlinable SQL function: the planner sees a small inner side and
-- keeps these tuned statements' plans (a hash join on it, their scans unchanged).
CREATE FUNCTION maintenance_ranges(from_ts timestamptz, to_ts timestamptz)
RETURNS TABLE (url_id bigint, ranges tstzmultirange)
LANGUAGE plpgsql STABLE ROWS 10 AS $$
BEGIN
    RETURN QUERY
    SELECT u.id, range_agg(tstzrange(s.starts_at, s.ends_at))
    FROM silence s JOIN url u ON u.url LIKE s.like_pattern
    WHERE s.maintenance_id IS NOT NULL AND s.starts_at < to_ts AND s.ends_at > from_ts
    GROUP BY u.id;
END $$;

-- Whether a slot counts toward uptime: not inside one of its URL's maintenance ranges.
CREATE FUNCTION outside_maintenance(ranges tstzmultirange, slot timestamptz) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ranges IS NULL OR NOT ranges @> slot
$$;

-- The LIKE patterns of the maintenance occurrences in force now: the page and `status` show a
-- URL matching one as "maintenance". Callers write `url LIKE ANY (ARRAY(SELECT maintenance_now()))`,
-- an uncorrelated subquery evaluated once per statement, not once per URL.
CREATE FUNCTION maintenance_now() RETURNS SETOF text
LANGUAGE sql STABLE AS $$
    SELECT like_pattern FROM silence
    WHERE maintenance_id IS NOT NULL AND starts_at <= now() AND ends_at > now()
$$;
