-- Schema version 5: uptime_summary keeps its 24 h latency histogram cumulative
-- (cum_24h[k]: the results in buckets hist_from .. hist_from + k - 1), so that a percentile
-- is one binary search in PostgreSQL (width_bucket) and `sitewatch status` computes every
-- figure of 100,000 URLs in one statement instead of parsing 100,000 arrays in Python.
--
-- The summary is derived data: emptied here, the next maintenance run builds it again from
-- the rollups (until then readers compute the figures from the rollups directly).
ALTER TABLE uptime_summary RENAME COLUMN hist_24h TO cum_24h;
TRUNCATE uptime_summary, uptime_summary_state;
