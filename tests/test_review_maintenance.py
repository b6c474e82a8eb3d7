"""Issue 24, D19: a lock timeout while creating one partition delays that partition only; the
rest of the maintenance run (rollups, summary, retention) still happens."""

import datetime

import psycopg2

from sitewatch.history import partitions
from tests.historydata import add_urls, insert_results

HOUR = datetime.timedelta(hours=1)


def _report(stdout: str) -> dict:
    return dict(item.split("=", 1) for item in stdout.split())


def test_a_lock_timeout_on_one_partition_does_not_abort_the_run(cli, dsn, db):
    with db.cursor() as cur:
        cur.execute("SELECT date_trunc('hour', now(), 'UTC')")
        this_hour = cur.fetchone()[0]
        last = partitions.attached(cur)[-1]["name"]
        cur.execute(f"ALTER TABLE task_result DETACH PARTITION {last}")    # a day ahead, empty
        cur.execute(f"DROP TABLE {last}")
    conn = psycopg2.connect(dsn)
    try:
        urls = add_urls(conn, 2)
        insert_results(conn, urls, this_hour - 3 * HOUR, this_hour - 2 * HOUR)
    finally:
        conn.close()

    holder = psycopg2.connect(dsn)          # a long transaction holding what ATTACH needs
    try:
        with holder.cursor() as cur:
            cur.execute("LOCK TABLE ONLY task_result IN SHARE UPDATE EXCLUSIVE MODE")
        done = cli("db", "maintain", timeout=120)
    finally:
        holder.rollback()
        holder.close()
    assert done.returncode == 0, done.stderr
    report = _report(done.stdout)
    assert report["partitions_created"] == "0"
    assert int(report["hours_rolled_up"]) >= 1          # the rollups ran after the delayed partition
    assert report["summary"] in ("built", "added")
    assert "partition creation delayed" in done.stderr
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM rollup_hour WHERE url_id = ANY (%s)", (urls,))
        assert cur.fetchone()[0] == 2
        assert last not in [p["name"] for p in partitions.attached(cur)]

    again = cli("db", "maintain")                        # the lock is gone: the partition follows
    assert again.returncode == 0, again.stderr
    # One, or two when the day turned between the runs (a new day ahead is due as well).
    assert _report(again.stdout)["partitions_created"] in ("1", "2")
    with db.cursor() as cur:
        assert last in [p["name"] for p in partitions.attached(cur)]


# Issue 24, D22: the alerts' outbox, silences and hosts are kept history.raw_days, like raw results.

def test_outbox_silences_and_hosts_are_expired_after_raw_days(cli, db):
    old, recent = "now() - interval '3 days'", "now() - interval '1 day'"
    with db.cursor() as cur:
        for n, (status, created) in enumerate([("sent", old), ("dead", old), ("pending", old), ("sending", old),
                                               ("sent", recent), ("dead", recent)]):
            cur.execute(f"INSERT INTO alert_outbox (key, channel, url_id, kind, detail, status, created_at)"
                        f" VALUES (%s, 'mail', 1, 'down', '{{}}', %s, {created})", (f"k{n}", status))
        for reason, ends, settled in [("old settled", old, True), ("old unsettled", old, False),
                                      ("recent settled", recent, True), ("active", "now() + interval '1 day'", False)]:
            cur.execute(f"INSERT INTO silence (pattern, like_pattern, starts_at, ends_at, reason, settled)"
                        f" VALUES ('x', 'x', now() - interval '10 days', {ends}, %s, %s)", (reason, settled))
        cur.execute(f"INSERT INTO alert_host (host, connectivity_ok, checked_at) VALUES"
                    f" ('gone', false, {old}), ('here', true, {recent})")
    done = cli("db", "maintain", env={"SITEWATCH_HISTORY__RAW_DAYS": "2"})
    assert done.returncode == 0, done.stderr
    with db.cursor() as cur:
        cur.execute("SELECT key FROM alert_outbox ORDER BY key")
        assert [k for (k,) in cur.fetchall()] == ["k2", "k3", "k4", "k5"]
        cur.execute("SELECT reason FROM silence ORDER BY id")
        assert [r for (r,) in cur.fetchall()] == ["old unsettled", "recent settled", "active"]
        cur.execute("SELECT host FROM alert_host")
        assert [h for (h,) in cur.fetchall()] == ["here"]
    assert _report(done.stdout)["alert_rows_expired"] == "4"


def test_audit_rows_are_expired_after_raw_days(cli, db):
    with db.cursor() as cur:
        cur.execute("INSERT INTO audit (at, actor, action, target) VALUES"
                    " (now() - interval '3 days', 'ci', 'url.add', 'old'),"
                    " (now() - interval '1 day', 'ci', 'url.add', 'recent')")
    done = cli("db", "maintain", env={"SITEWATCH_HISTORY__RAW_DAYS": "2"})
    assert done.returncode == 0, done.stderr
    with db.cursor() as cur:
        cur.execute("SELECT target FROM audit")
        assert [t for (t,) in cur.fetchall()] == ["recent"]
    assert _report(done.stdout)["audit_rows_expired"] == "1"
