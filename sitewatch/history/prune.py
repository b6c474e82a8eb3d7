"""Retention of the alerts' bookkeeping: the outbox, silences, hosts and one-off maintenance
windows, kept history.raw_days.

Called by the maintenance job (history/maintenance.py) once per run. Only rows nothing can
need any more are deleted:

* alert_outbox rows `sent` or `dead` created more than raw_days ago. Pending and sending
  rows are the notifier's work and are never touched, however old. (An event's key is
  decided from results, and results older than raw_days are never applied again, so no
  notice can be queued twice for lack of its old row.)
* silences that ended more than raw_days ago and are settled (a silence not yet settled
  still owes the notices that its end may release).
* alert_host rows of hosts that have not reported their connectivity for raw_days (a host
  taken out of service, or renamed).
* one-off maintenance windows over for raw_days (their occurrence, a silence, goes by the
  rule above); recurring ones stay until `maintenance remove`.

In batches, each its own transaction: no long lock, no huge transaction.
"""

TABLES = {
    "alert_outbox": "status IN ('sent', 'dead') AND created_at < %(cutoff)s",
    "silence": "settled AND ends_at < %(cutoff)s",
    "alert_host": "checked_at < %(cutoff)s",
    "maintenance": "every IS NULL AND (start_local AT TIME ZONE tz) + make_interval(secs => duration) < %(cutoff)s",
}


def expire(conn, raw_days: int, batch: int = 10_000) -> dict:
    """Delete the rows past retention; {table: rows deleted}. `conn` is in transaction mode."""
    with conn.cursor() as cur:
        cur.execute("SELECT now() - make_interval(days => %s)", (raw_days,))
        cutoff = cur.fetchone()[0]
    conn.commit()
    return {table: _delete_all(conn, table, condition, cutoff, batch) for table, condition in TABLES.items()}


def _delete_all(conn, table: str, condition: str, cutoff, batch: int) -> int:
    """Delete the rows matching `condition`, `batch` at a time, committing each batch."""
    total, count = 0, batch
    while count == batch:
        with conn.cursor() as cur:
            cur.execute(f"DELETE FROM {table} WHERE ctid = ANY (ARRAY("
                        f"SELECT ctid FROM {table} WHERE {condition} LIMIT %(batch)s))",
                        {"cutoff": cutoff, "batch": batch})
            count = cur.rowcount
        conn.commit()
        total += count
    return total
