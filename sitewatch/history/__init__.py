"""History: day-partitioned results, retention, hourly/daily rollups, uptime and percentiles.

Modules: partitions (create ahead, drop after retention), migration (schema 3,
online), rollup (hourly/daily summaries behind a watermark), maintenance (the
job), histogram (latency buckets and percentiles), uptime (the API the web
page, `status` and metrics use), report (the `status` and `history` commands).
"""
