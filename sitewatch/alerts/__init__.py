"""Alerts (issue 8): per-URL state, incidents, the notification outbox and its notifier, silences."""
