"""Maintenance windows: `sitewatch maintenance add|list|remove` (issue 22).

Not to be confused with history/maintenance.py, the database job (rollups, retention).
schedule.py owns the times (pure), store.py the SQL, cli.py the command. A window's
occurrences are written ahead as `silence` rows (migration 0014), so the alerts' silence
machinery holds the notices inside and settles the one owed at the end.
"""
