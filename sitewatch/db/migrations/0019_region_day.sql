-- Schema version 19: daily region rollups (issue 21).
--
-- The per-region and quorum uptime (history/regionuptime.py) summed up to 720 rows of
-- rollup_region_hour per (URL, region or '') for its 30-day window: `status` grew linearly,
-- about 1.6 s at 1,000 URLs with three regions. rollup_region_day is to rollup_region_hour
-- what rollup_day is to rollup_hour: per (URL, region or '', UTC day) the sums of the day's
-- hours, written by the daily rollup behind the day watermark (history/rollup.py,
-- queries.sql rollup_region_days) and kept history.daily_days. The read takes whole days
-- from it, the hours at the windows' edges from rollup_region_hour and the rest raw, as
-- uptime.py does for a URL (history/windows.py window_bounds). An install that never had
-- a region writes nothing here and reads nothing from it.
CREATE TABLE rollup_region_day (
    url_id bigint NOT NULL,
    region text NOT NULL,             -- '' = the URL by the quorum rule, slot by slot
    bucket timestamptz NOT NULL,      -- the UTC day
    -- integers, as rollup_region_hour's: a day at a 1 s period is 86,400 slots, far from the
    -- limit, and sum(integer) adds in bigint where sum(bigint) would add in numeric
    checks integer NOT NULL,
    ok integer NOT NULL,
    failed integer NOT NULL,
    PRIMARY KEY (url_id, region, bucket)
);
CREATE INDEX rollup_region_day_bucket ON rollup_region_day (bucket);

-- The days already rolled up (before the day watermark) keep their data: the sums of their
-- hours still kept. The days after it are the daily rollup's, once their hours are final.
INSERT INTO rollup_region_day (url_id, region, bucket, checks, ok, failed)
SELECT url_id, region, date_trunc('day', bucket, 'UTC'), sum(checks), sum(ok), sum(failed)
FROM rollup_region_hour
WHERE bucket < (SELECT coalesce(done_until, '-infinity') FROM rollup_watermark WHERE level = 'day')
GROUP BY 1, 2, 3;
