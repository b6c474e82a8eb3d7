"""Schema version 3: task_result partitioned by day, rollup tables (sitewatch/history/migration.py)."""

from sitewatch.history.migration import upgrade  # noqa: F401  (schema.migrate calls upgrade)
