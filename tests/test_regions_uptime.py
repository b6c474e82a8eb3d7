"""Uptime of URLs with regions and the one definition of an absent region (DESIGN.md section 12,
issue 21), on a real PostgreSQL: per region, and the URL's own counting each slot once by its
down_when over the regions that reported for it, the same from raw rows, from the hourly
rollup (rollup_region_hour) and from migration 0017's backfill; a region absent exactly while
announced, whatever a URL's period; consumers' claims as a region's sign of life.

The slots (ten, three hours ago, regions a, b and c):
  0-3 every region up; 4-5 a failed; 6-7 a and b failed; 8 a lost, b failed, c up; 9 all lost.
Majority: slots 0-5 and 8 up, 6-7 down, 9 counts neither: 7 of 9. Any: 4 of 9.
a: 4 of 8 (two lost); b: 6 of 9; c: 9 of 9 (slot 9 lost everywhere).
"""

import datetime

import psycopg2
import pytest

from sitewatch.alerts import store as alerts_store
from sitewatch.db import schema, store
from sitewatch.history import regionuptime, rollup
from sitewatch.regions import state as regionstate
from tests.test_regions_migration import migrate_to

SLOTS = {      # slot: (a, b, c), each True (up), False (failed) or None (lost)
    0: (True, True, True), 1: (True, True, True), 2: (True, True, True), 3: (True, True, True),
    4: (False, True, True), 5: (False, True, True),
    6: (False, False, True), 7: (False, False, True),
    8: (None, False, True), 9: (None, None, None),
}
MAJORITY, ANY = 0.77777, 0.44444          # 7/9 and 4/9, truncated
PER_REGION = {"a": 0.5, "b": 0.66666, "c": 1.0}


def q(conn, sql, params=None):
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else None


def seed(conn) -> tuple[int, int, datetime.datetime]:
    """Two URLs with regions a, b, c (one with down_when any) and SLOTS three hours ago;
    returns their ids and the hour."""
    with conn.cursor() as cur:
        cur.execute("INSERT INTO url (url, period, timeout, next_check_at, regions, created_at)"
                    # next_check_at on the hour: the seeded slots (minutes of an hour) are on its grid
                    " VALUES ('http://q.example/', 60, 5, date_trunc('hour', now(), 'UTC') + interval '1 hour',"
                    " '{a,b,c}',"
                    " now() - interval '1 day')"
                    " RETURNING id")
        default = cur.fetchone()[0]
        cur.execute("INSERT INTO url (url, period, timeout, next_check_at, regions, down_when, created_at)"
                    " VALUES ('http://any.example/', 60, 5, date_trunc('hour', now(), 'UTC') + interval '1 hour',"
                    " '{a,b,c}', 'any',"
                    " now() - interval '1 day') RETURNING id")
        strict = cur.fetchone()[0]
        cur.execute("SELECT date_trunc('hour', now(), 'UTC') - interval '3 hours'")
        hour = cur.fetchone()[0]
        for url_id in (default, strict):
            for slot, verdicts in SLOTS.items():
                for region, ok in zip("abc", verdicts, strict=True):
                    cur.execute("INSERT INTO task_result (url_id, scheduled_at, started_at, ok, error_kind,"
                                " checked_by, region) VALUES (%s, %s, now(), %s, %s, 't', %s)",
                                (url_id, hour + datetime.timedelta(minutes=slot), bool(ok),
                                 None if ok else "lost" if ok is None else "connect", region))
    conn.commit()
    return default, strict, hour


def uptimes(conn, down_when="majority") -> dict:
    found = regionuptime.for_urls(conn, None, down_when)
    return {url_id: {region: figures["24h"].uptime for region, figures in regions.items()}
            for url_id, regions in found.items()}


def expected(default, strict) -> dict:
    return {default: {"": MAJORITY, **PER_REGION}, strict: {"": ANY, **PER_REGION}}


@pytest.fixture
def conn(dsn):
    conn = psycopg2.connect(dsn)
    yield conn
    conn.close()


def test_each_slot_counts_once_by_the_quorum_rule_from_raw_rows_and_from_the_rollup(conn):
    default, strict, hour = seed(conn)
    assert uptimes(conn) == expected(default, strict)
    # alerts.down_when is the default of URLs without their own: `any` turns q's figure too
    assert uptimes(conn, "any")[default][""] == ANY and uptimes(conn, "any")[strict][""] == ANY
    # no host has had a region: the rollup writes no region rows
    assert rollup.catch_up_hours(conn, 300, down_when="majority")["regional"] is False
    assert q(conn, "SELECT count(*) FROM rollup_region_hour") == [(0,)]
    q(conn, "UPDATE rollup_watermark SET done_until = NULL WHERE level = 'hour'")
    q(conn, "INSERT INTO region_host (owner, region, seen_at) VALUES ('h:notifier:1', 'a', now())")
    conn.commit()
    done = rollup.catch_up_hours(conn, 300, down_when="majority")
    assert done["until"] > hour and done["regional"] is True
    rows = q(conn, "SELECT region, checks, ok, failed FROM rollup_region_hour WHERE url_id = %s ORDER BY region",
             (default,))
    assert rows == [("", 10, 7, 2), ("a", 10, 4, 4), ("b", 10, 6, 3), ("c", 10, 9, 0)]
    conn.commit()
    # the figures now come from the rollup: the raw rows are gone, and nothing changed
    q(conn, "DELETE FROM task_result")
    conn.commit()
    assert uptimes(conn) == expected(default, strict)
    # rollup_hour still counts every region's result (its checks are every check made)
    assert q(conn, "SELECT checks, ok, failed FROM rollup_hour WHERE url_id = %s", (default,)) == [(30, 19, 7)]


def test_a_confirmation_counts_in_its_region_and_is_no_slot_of_the_url(conn):
    # A failed confirmation from region a alone, off the URL's slot grid (regions/confirm.py):
    # a's figure counts it; the URL's own, by the quorum rule, must not read it as a slot that
    # one region of one reported down (it would be "down" by majority of one).
    default, strict, hour = seed(conn)
    q(conn, "INSERT INTO task_result (url_id, scheduled_at, started_at, ok, error_kind, checked_by, region)"
            " VALUES (%s, %s, now(), false, 'connect', 't', 'a')",
      (default, hour + datetime.timedelta(minutes=4, seconds=3)))
    conn.commit()
    raw = uptimes(conn)[default]
    assert raw[""] == MAJORITY and raw["a"] == 0.44444 and raw["b"] == PER_REGION["b"]
    q(conn, "INSERT INTO region_host (owner, region, seen_at) VALUES ('h:notifier:1', 'a', now())")
    conn.commit()
    rollup.catch_up_hours(conn, 300, down_when="majority")
    rows = q(conn, "SELECT region, checks, ok, failed FROM rollup_region_hour WHERE url_id = %s ORDER BY region",
             (default,))
    assert rows == [("", 10, 7, 2), ("a", 11, 4, 5), ("b", 10, 6, 3), ("c", 10, 9, 0)]


def test_migration_17_keeps_the_hours_already_rolled_up(empty_dsn):
    conn = psycopg2.connect(empty_dsn)
    try:
        migrate_to(conn, 15)
        default, strict, hour = seed(conn)
        q(conn, "UPDATE rollup_watermark SET done_until = %s WHERE level = 'hour'",
          (hour + datetime.timedelta(hours=1),))
        conn.commit()
        assert "0017_region_uptime.sql" in schema.migrate(conn)
        rows = q(conn, "SELECT url_id, region, checks, ok, failed FROM rollup_region_hour WHERE bucket = %s"
                       " ORDER BY url_id, region", (hour,))
        # the backfill knows no alerts.down_when: majority, unless the URL has its own
        assert rows == [(default, "", 10, 7, 2), (default, "a", 10, 4, 4), (default, "b", 10, 6, 3),
                        (default, "c", 10, 9, 0), (strict, "", 10, 4, 5), (strict, "a", 10, 4, 4),
                        (strict, "b", 10, 6, 3), (strict, "c", 10, 9, 0)]
        conn.commit()
        q(conn, "DELETE FROM task_result")
        conn.commit()
        assert uptimes(conn) == expected(default, strict)
    finally:
        conn.close()


# --------------------------------------------------------------------------- absent regions


def test_a_region_is_absent_only_once_announced_whatever_a_urls_period(db):
    """One definition: a URL checked every 10 s does not leave c out after 20 s of silence
    while no region_absent was announced (two check.default_period: 120 s here)."""
    [(fast,)] = q(db, "INSERT INTO url (url, period, timeout, next_check_at, regions) VALUES"
                      " ('http://fast.example/', 10, 5, now(), '{a,b,c}') RETURNING id")
    for owner, region, ago in (("ha:n:1", "a", 0), ("hb:n:1", "b", 0), ("hc:n:1", "c", 30)):
        q(db, "INSERT INTO region_host (owner, region, seen_at) VALUES (%s, %s, now() - make_interval(secs => %s))",
          (owner, region, ago))
    alerts_store.announce_absent_regions(db, 120, ["ops"])
    assert q(db, "SELECT alert_region_absent('c', 20)") == [(False,)]       # the URL's two periods
    assert {r: s["state"] for r, s in regionstate.region_states(db, None)[fast].items()} == {
        "a": "unknown", "b": "unknown", "c": "unknown"}
    assert q(db, "SELECT count(*) FROM alert_outbox") == [(0,)]
    q(db, "UPDATE region_host SET seen_at = now() - interval '200 seconds' WHERE region = 'c'")
    alerts_store.announce_absent_regions(db, 120, ["ops"])
    assert q(db, "SELECT alert_region_absent('c', 20), alert_region_absent('c', 100000)") == [(True, True)]
    assert regionstate.region_states(db, None)[fast]["c"]["state"] == "absent"
    assert q(db, "SELECT kind, detail->>'region' FROM alert_outbox") == [("region_absent", "c")]


def test_a_consumers_claims_keep_its_region_present_with_its_notifier_stuck(db):
    q(db, "INSERT INTO url (url, period, timeout, next_check_at, regions) VALUES"
          " ('http://r.example/', 60, 5, now(), '{a}'), ('http://p.example/', 60, 5, now(), '{}')")
    assert alerts_store.regions_in_use(db) is False
    # a host without a region: its claims are no heartbeat (and there is no region to keep)
    store.enqueue_due(db, 100)
    store.claim_tasks(db, "hp:consumer:1", 10, 10.0, 3, "")
    assert q(db, "SELECT count(*) FROM region_host") == [(0,)]
    # region a's notifier last beat an hour ago; its consumer claims
    q(db, "INSERT INTO region_host (owner, region, seen_at) VALUES ('ha:notifier:1', 'a', now() - interval '1 hour')")
    claimed, _ = store.claim_tasks(db, "ha:consumer:1", 10, 10.0, 3, "a")
    assert [t["url"] for t in claimed] == ["http://r.example/"]
    assert q(db, "SELECT region, seen_at > now() - interval '1 minute' FROM region_host"
                 " WHERE owner = 'ha:consumer:1'") == [("a", True)]
    alerts_store.announce_absent_regions(db, 120, ["ops"])
    assert q(db, "SELECT count(*) FROM region_absence") == [(0,)]
    assert alerts_store.regions_in_use(db) is True
    # at most one write a second per consumer: a row seen "later" than now is left as it is
    q(db, "UPDATE region_host SET seen_at = now() + interval '1 hour' WHERE owner = 'ha:consumer:1'")
    store.claim_tasks(db, "ha:consumer:1", 10, 10.0, 3, "a")
    assert q(db, "SELECT seen_at > now() + interval '59 minutes' FROM region_host"
                 " WHERE owner = 'ha:consumer:1'") == [(True,)]


def test_history_region_gives_its_hourly_rows_where_raw_rows_are_gone(conn):
    """Before the oldest raw partition: `history --region a` has a's own hourly rows (its
    checks and failures), not the URL's rollup_hour (every region's results together)."""
    from sitewatch.history import report
    default, _, _ = seed(conn)
    old = q(conn, "SELECT date_trunc('day', now(), 'UTC') - interval '3 days'")[0][0]
    q(conn, "INSERT INTO rollup_region_hour (url_id, region, bucket, checks, ok, failed) VALUES"
            " (%(u)s, 'a', %(t)s, 60, 58, 2), (%(u)s, 'b', %(t)s, 60, 60, 0), (%(u)s, '', %(t)s, 60, 60, 0)",
      {"u": default, "t": old})
    q(conn, "INSERT INTO rollup_hour (url_id, bucket, checks, ok, failed, non_2xx, rt_count, rt_hist)"
            " VALUES (%s, %s, 180, 178, 2, 2, 0, '{}')", (default, old))
    conn.commit()
    since, until = old - datetime.timedelta(hours=1), old + datetime.timedelta(days=1)
    rows = [row for row in report.history_rows(conn, default, since, until, "a") if row[15] == "hourly"]
    assert [(row[0], row[5], row[7], row[16]) for row in rows] == [(old, False, "2 of 60 checks failed", "a")]
    every = [row for row in report.history_rows(conn, default, since, until) if row[15] == "hourly"]
    assert [(row[0], row[7], row[16]) for row in every] == [(old, "2 of 180 checks failed", None)]
