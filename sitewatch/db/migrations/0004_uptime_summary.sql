-- Schema version 4: a per-URL uptime summary kept by the maintenance job
-- (sitewatch/history/summary.py), so that `sitewatch status` and the web page read one row
-- per URL plus a few minutes of raw rows instead of a month of rollups.
--
-- Anchored at `anchor` (the hourly watermark when it was built): the ok and failed counts
-- of each window cover [anchor - window + 1 hour, until), which is what the window needs
-- while the clock is in the hour after the anchor; hist_24h (the latency histogram of
-- history/histogram.py, from bucket hist_from on: 100,000 of them are read at once, and
-- a site's response times fill a few buckets of the hundred) covers the same span for 24 h. Raw rows from `until` on are added
-- at query time. Built again from the rollups when the watermark moves; between builds,
-- the job adds the raw rows that became complete.
CREATE TABLE uptime_summary (
    url_id      bigint PRIMARY KEY,
    ok_24h      bigint NOT NULL,
    failed_24h  bigint NOT NULL,
    ok_7d       bigint NOT NULL,
    failed_7d   bigint NOT NULL,
    ok_30d      bigint NOT NULL,
    failed_30d  bigint NOT NULL,
    hist_from   integer NOT NULL,   -- the bucket index of hist_24h[1]: leading empty buckets left out
    hist_24h    integer[] NOT NULL
) WITH (fillfactor = 70);   -- every row is rewritten once a job run: room keeps updates HOT

-- One row: what the summary rows cover (no row, or a null anchor: no summary yet).
CREATE TABLE uptime_summary_state (
    one         boolean PRIMARY KEY DEFAULT true CHECK (one),
    anchor      timestamptz NOT NULL,
    until       timestamptz NOT NULL,
    built_at    timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
