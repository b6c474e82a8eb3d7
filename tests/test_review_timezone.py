"""Issue 24, D18: every connection sitewatch opens runs in UTC, whatever PGTZ (or the server's
TimeZone) says. Retention cutoffs and printed times must not follow the session's zone."""

import datetime
import zoneinfo

import psycopg2

ZONE = "Australia/Sydney"
UTC = datetime.timezone.utc


def _days_across_a_zone_change(today: datetime.datetime) -> int:
    """A number of days N such that Sydney's UTC offset differs between today and N days ago, so
    that `today - N days` computed in Sydney's zone is an hour off UTC's."""
    tz = zoneinfo.ZoneInfo(ZONE)
    for n in range(1, 400):
        if (today - datetime.timedelta(days=n)).astimezone(tz).utcoffset() != today.astimezone(tz).utcoffset():
            return n
    raise AssertionError("no DST change in Sydney within 400 days")


def test_db_maintain_expires_hourly_rollups_at_the_utc_cutoff_under_pgtz(cli, db):
    today = datetime.datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    hourly_days = _days_across_a_zone_change(today)
    cutoff = today - datetime.timedelta(days=hourly_days)
    hours = [cutoff + datetime.timedelta(hours=h) for h in (-2, -1, 0, 1, 2)]
    with db.cursor() as cur:
        cur.execute("UPDATE rollup_watermark SET done_until = %s", (today,))
        for bucket in hours:
            cur.execute("INSERT INTO rollup_hour (url_id, bucket, checks, ok, failed, non_2xx, rt_count, rt_hist)"
                        " VALUES (1, %s, 1, 1, 0, 0, 0, '{}')", (bucket,))
    done = cli("db", "maintain", env={"PGTZ": ZONE, "SITEWATCH_HISTORY__HOURLY_DAYS": str(hourly_days),
                                      "SITEWATCH_HISTORY__DAILY_DAYS": "3000"})
    assert done.returncode == 0, done.stderr
    with db.cursor() as cur:
        cur.execute("SELECT bucket FROM rollup_hour WHERE url_id = 1 ORDER BY bucket")
        kept = [row[0] for row in cur.fetchall()]
    # Rows before the UTC day `hourly_days` ago are expired, the rest kept: not an hour more or less.
    assert kept == hours[2:]


def test_incidents_print_utc_times_under_pgtz(cli, db):
    started = datetime.datetime(2026, 1, 15, 3, 4, 5, tzinfo=UTC)
    with db.cursor() as cur:
        cur.execute("INSERT INTO incident (url_id, url, started_at, ended_at, failed_checks)"
                    " VALUES (1, 'https://gone.example/', %s, %s, 3)",
                    (started, started + datetime.timedelta(minutes=10)))
    out = cli("incidents", env={"PGTZ": ZONE})
    assert out.returncode == 0, out.stderr
    assert "2026-01-15 03:04:05" in out.stdout, out.stdout
    assert "2026-01-15 03:14:05" in out.stdout, out.stdout


def test_every_sitewatch_connection_is_in_utc_whatever_pgtz_says(dsn, monkeypatch):
    from sitewatch.db.database import connect
    monkeypatch.setenv("PGTZ", ZONE)
    plain = psycopg2.connect(dsn)             # the environment is in effect: a plain connection follows it
    conn = connect(dsn, 5.0, "test")
    try:
        with plain.cursor() as cur:
            cur.execute("SHOW TimeZone")
            assert cur.fetchone()[0] == ZONE
        with conn.cursor() as cur:
            cur.execute("SHOW TimeZone")
            assert cur.fetchone()[0] == "UTC"
    finally:
        conn.close()
        plain.close()
