-- Schema version 17: regions on the read side (issue 21). (Numbered 17, not 16: the
-- confirmation checks take 16.)
--
-- 1. One definition of an absent region. Until now the quorum (alert_apply_region_results)
--    and the readers (history/queries.sql region_states) called a region absent when none of
--    its hosts had been seen for two of each URL's periods, while region_absent was announced
--    after two check.default_period: a URL with a shorter period left a region out of its
--    count before (or without) the notice. From now on a region is absent exactly while it has
--    a region_absence row: the notifiers' sweep (alerts/queries.sql announce_absent_regions,
--    two check.default_period without a sign of life) inserts it, with its one notice, and
--    deletes it when the region is seen again. alert_region_absent keeps its signature (its
--    callers pass a URL's two periods, which no longer matter).
CREATE OR REPLACE FUNCTION alert_region_absent(region text, seconds integer) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT EXISTS (SELECT 1 FROM region_absence a WHERE a.region = $1)
$$;

-- 2. Uptime per region, and the URL's own by the quorum rule per slot. rollup_hour counts every
--    row of a slot, one per region, so a URL checked from three regions had three results a
--    slot, all regions mixed. rollup_region_hour keeps, for URLs with regions only, per
--    (URL, region, UTC hour): the region's checks, ok and failed (as rollup_hour counts them:
--    `lost` and maintenance count neither way); and under region '' the URL's slots by its
--    down_when over the regions that reported for that slot (history_slot_failed). Written by
--    the hourly rollup with rollup_hour (history/rollup.py, queries.sql rollup_region_slice),
--    kept as long (history.hourly_days). An install that never had a region writes nothing
--    here and reads nothing from it.
CREATE TABLE rollup_region_hour (
    url_id bigint NOT NULL,
    region text NOT NULL,             -- '' = the URL by the quorum rule, slot by slot
    bucket timestamptz NOT NULL,
    -- integers (an hour's counts): sum(integer) adds in bigint, sum(bigint) in numeric, several
    -- times slower over a month of hours for every URL (`status`)
    checks integer NOT NULL,
    ok integer NOT NULL,
    failed integer NOT NULL,
    PRIMARY KEY (url_id, region, bucket)
);
CREATE INDEX rollup_region_hour_bucket ON rollup_region_hour (bucket);

-- Whether a slot is down: NULL when no region reported (every row `lost`), else whether at
-- least alert_down_needed of the regions that reported failed.
CREATE FUNCTION history_slot_failed(down_when text, reported bigint, failed bigint) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN reported < 1 THEN NULL ELSE failed >= alert_down_needed(down_when, reported::integer) END
$$;

-- The hours already rolled up keep their data: computed here from the raw rows still kept
-- (a URL without its own down_when by the default, majority; the hours after the watermark
-- are the rollup's, with alerts.down_when).
INSERT INTO rollup_region_hour (url_id, region, bucket, checks, ok, failed)
WITH slot AS (
    SELECT t.url_id, t.scheduled_at, t.region, t.ok, t.error_kind IS NOT DISTINCT FROM 'lost' AS lost,
           outside_maintenance(m.ranges, t.scheduled_at) AS counted
    FROM task_result t LEFT JOIN maintenance_ranges('-infinity', 'infinity') AS m USING (url_id)
    WHERE t.region <> '' AND t.scheduled_at < (SELECT coalesce(done_until, '-infinity') FROM rollup_watermark
                                               WHERE level = 'hour')
), quorum AS (
    SELECT s.url_id, s.scheduled_at, bool_and(s.counted) AS counted,
           history_slot_failed(coalesce(min(u.down_when), 'majority'), count(*) FILTER (WHERE NOT s.lost),
                               count(*) FILTER (WHERE NOT s.ok AND NOT s.lost)) AS failed
    FROM slot s LEFT JOIN url u ON u.id = s.url_id
    GROUP BY s.url_id, s.scheduled_at
)
SELECT url_id, region, date_trunc('hour', scheduled_at, 'UTC'), count(*),
       count(*) FILTER (WHERE ok AND counted), count(*) FILTER (WHERE NOT ok AND NOT lost AND counted)
FROM slot GROUP BY 1, 2, 3
UNION ALL
SELECT url_id, '', date_trunc('hour', scheduled_at, 'UTC'), count(*),
       count(*) FILTER (WHERE NOT failed AND counted), count(*) FILTER (WHERE failed AND counted)
FROM quorum GROUP BY 1, 3;
