"""Cron schedules of push monitors, `url add push://NAME --cron EXPR --tz ZONE` (issue 20): the
fire-time arithmetic as pure functions (across daylight-saving changes), the real `sitewatch`
command, pings over real HTTP to the web listener, and the producer's statements on a real
PostgreSQL, from two connections at once."""

import threading
from datetime import datetime, timedelta, timezone

import psycopg2
import pytest

from sitewatch.check import push, pushcron
from sitewatch.errors import BadInput
from tests.conftest import count
from tests.test_push import add_push, listener, results  # noqa: F401  (fixture)
from tests.test_run import query, scalar, wait_until
from tests.test_run import sitewatch as sitewatch  # noqa: F401  (fixture)

UTC = timezone.utc


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def fire_times(expr, tz, after, n) -> list[datetime]:
    it = pushcron.fires(expr, tz, after)
    return [next(it) for _ in range(n)]


# --- the schedule, pure -----------------------------------------------------------------------

def test_a_daily_0230_job_in_berlin_across_both_dst_changes():
    # spring forward, Sunday 29 March 2026: 02:00 CET -> 03:00 CEST, there is no 02:30; like
    # Debian's cron the job runs at the change (03:00 CEST = 01:00 UTC), once
    assert fire_times("30 2 * * *", "Europe/Berlin", utc(2026, 3, 27, 12), 3) == [
        utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)]
    # fall back, Sunday 25 October 2026: 03:00 CEST -> 02:00 CET, 02:30 happens twice; a fixed-time
    # job runs at the first only (00:30 UTC), not again an hour later
    assert fire_times("30 2 * * *", "Europe/Berlin", utc(2026, 10, 23, 12), 3) == [
        utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]
    # a job with `*` as its hour runs in both passes of the repeated hour: 4 fires in 2 hours of UTC
    assert fire_times("*/30 * * * *", "Europe/Berlin", utc(2026, 10, 24, 23, 45), 5) == [
        utc(2026, 10, 25, 0, 0), utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 0), utc(2026, 10, 25, 1, 30),
        utc(2026, 10, 25, 2, 0)]
    # and in UTC nothing moves
    assert fire_times("30 2 * * *", "UTC", utc(2026, 3, 28, 12), 2) == [utc(2026, 3, 29, 2, 30),
                                                                       utc(2026, 3, 30, 2, 30)]


def test_the_slot_rules_of_a_cron_monitor():
    expr, tz, grace = "0 * * * *", "UTC", 600               # hourly, 10 minutes' grace
    cursor = utc(2026, 5, 4, 10)
    # a success after the fire time settles it; one before it settles nothing; a failure always does
    assert pushcron.settle_ping(expr, tz, grace, cursor, cursor + timedelta(minutes=3), push.SUCCESS) == (
        cursor, utc(2026, 5, 4, 11), 0)
    assert pushcron.settle_ping(expr, tz, grace, cursor, cursor - timedelta(minutes=3), push.SUCCESS) == (
        None, cursor, 0)
    assert pushcron.settle_ping(expr, tz, grace, cursor, cursor - timedelta(minutes=3), push.FAILURE) == (
        cursor, utc(2026, 5, 4, 11), 0)
    assert pushcron.settle_ping(expr, tz, grace, cursor, cursor, push.START) == (None, cursor, 0)
    # no producer ran for three hours and a bit: the ping settles 13:00, 10:00-12:00 are skipped
    assert pushcron.settle_ping(expr, tz, grace, cursor, utc(2026, 5, 4, 13, 20), push.SUCCESS) == (
        utc(2026, 5, 4, 13), utc(2026, 5, 4, 14), 3)
    # the producer: the latest fire whose grace is over (12:00 at 13:05), 10:00 and 11:00 skipped
    assert pushcron.settle_missed(expr, tz, grace, cursor, utc(2026, 5, 4, 13, 5)) == (
        utc(2026, 5, 4, 12), utc(2026, 5, 4, 13), 2)
    # an overrun /start run, before the cursor's own deadline: the cursor slot
    assert pushcron.settle_missed(expr, tz, grace, cursor, cursor + timedelta(minutes=5)) == (
        cursor, utc(2026, 5, 4, 11), 0)
    assert pushcron.deadline(cursor, grace, None) == cursor + timedelta(minutes=10)
    assert pushcron.deadline(cursor, grace, cursor - timedelta(hours=1)) == cursor - timedelta(minutes=50)


def test_validate_gives_the_gaps_and_refuses_what_never_fires():
    monday = utc(2026, 5, 4, 0)
    assert pushcron.validate("0  9 * * 1-5", None, monday) == ("0 9 * * 1-5", "UTC", 86400, 3 * 86400)
    assert pushcron.validate("*/15 * * * *", "Asia/Kolkata", monday)[2:] == (900, 900)
    assert pushcron.validate("0 0 1 1 *", "UTC", monday)[2:] == (365 * 86400, 365 * 86400)   # yearly: fine
    for expr in ("0 0 30 2 *", "61 * * * *", "* * * * * *", "@daily", "", None):
        with pytest.raises(BadInput):
            pushcron.validate(expr, "UTC", monday)
    for start in (monday, utc(2027, 3, 1)):       # 29 February: next in 2028, then 2032
        with pytest.raises(BadInput, match="at least once a year"):
            pushcron.validate("0 0 29 2 *", "UTC", start)
    with pytest.raises(BadInput, match="unknown time zone"):
        pushcron.validate("0 3 * * *", "Mars/Olympus_Mons", monday)


# --- the command line -------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["url", "add", "push://x", "--cron", "61 * * * *"],
    ["url", "add", "push://x", "--cron", "every day"],
    ["url", "add", "push://x", "--cron", "0 0 30 2 *"],                 # never fires
    ["url", "add", "push://x", "--cron", "0 3 * * *", "--tz", "Europe/Nowhere"],
    ["url", "add", "push://x", "--cron", "0 3 * * *", "--period", "1d"],
    ["url", "add", "push://x", "--tz", "Europe/Berlin"],                  # a zone with no schedule
    ["url", "add", "https://example.com/", "--cron", "0 3 * * *"],
])
def test_bad_cron_or_zone_exits_2_with_one_line_and_writes_nothing(cli, db, args):
    done = cli(*args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert len(done.stderr.strip().splitlines()) == 1 and "error" in done.stderr
    assert count(db, "url") == 0


def test_url_add_stores_the_schedule_and_update_switches_between_period_and_cron(cli, db):
    done = cli("url", "add", "push://backup", "--cron", "0 3 * * *", "--tz", "Europe/Berlin", "--grace", "30m")
    assert done.returncode == 0, done.stderr
    assert "after each fire of '0 3 * * *' in Europe/Berlin, grace 1800 s" in done.stdout
    cron, tz, period, grace, slot, deadline = query(
        db, "SELECT cron, tz, period, grace, push_slot, next_check_at - push_slot FROM url")[0]
    assert (cron, tz, grace, deadline) == ("0 3 * * *", "Europe/Berlin", 1800, timedelta(minutes=30))
    assert period == 90000                 # the longest gap: 25 h, over October's change (within a year)
    assert slot == pushcron.next_fire("0 3 * * *", "Europe/Berlin", datetime.now(UTC))   # the next 03:00 there
    # default grace: a fifth of the shortest gap, at most an hour
    add_push(cli, "quarterly", "--cron", "*/15 * * * *")
    assert scalar(db, "SELECT grace FROM url WHERE url = 'push://quarterly'") == 180

    done = cli("url", "update", "push://backup", "--notify", "")          # no schedule change: the slot stays
    assert done.returncode == 0 and "re-slotted" not in done.stdout, done.stderr
    assert scalar(db, "SELECT push_slot FROM url WHERE url = 'push://backup'") == slot
    done = cli("url", "update", "push://backup", "--period", "6h")        # to fixed-rate: from now
    assert done.returncode == 0 and "re-slotted from now" in done.stdout, done.stderr
    assert query(db, "SELECT cron, tz, period, now() - push_slot < interval '5 s' FROM url"
                     " WHERE url = 'push://backup'") == [(None, None, 21600, True)]
    done = cli("url", "update", "push://backup", "--cron", "0 4 * * 1")   # back to cron, UTC unless --tz
    assert done.returncode == 0 and "re-slotted from now" in done.stdout, done.stderr
    assert query(db, "SELECT cron, tz, period, push_slot FROM url WHERE url = 'push://backup'") == [
        ("0 4 * * 1", "UTC", 7 * 86400, pushcron.next_fire("0 4 * * 1", "UTC", datetime.now(UTC)))]
    done = cli("url", "update", "push://backup", "--cron", "0 5 * * 1")   # a new schedule: its next fire
    assert done.returncode == 0 and "re-slotted from now" in done.stdout, done.stderr
    assert scalar(db, "SELECT push_slot FROM url WHERE url = 'push://backup'") == pushcron.next_fire(
        "0 5 * * 1", "UTC", datetime.now(UTC))
    before = query(db, "SELECT * FROM url ORDER BY id")
    for args in (["--cron", "0 4 * * 8"], ["--tz", "Nowhere/Land"], ["--cron", "0 4 * * 1", "--period", "1h"]):
        done = cli("url", "update", "push://backup", *args)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, (args, done.stderr)
    assert query(db, "SELECT * FROM url ORDER BY id") == before


# --- pings and missed slots on the database's clock ---------------------------------------------

def daily_at(db, *minutes_ago: int) -> tuple[str, datetime]:
    """A UTC cron expression firing daily at these times before the database's now (whole minutes),
    and the earliest of them."""
    now = scalar(db, "SELECT date_trunc('minute', now())")
    fires = [now - timedelta(minutes=m) for m in minutes_ago]
    assert len({f.hour for f in fires}) == len(fires)
    return f"{fires[0].minute} {','.join(str(f.hour) for f in fires)} * * *", min(fires)


def put_cursor(db, name, slot: datetime) -> None:
    """As if push://NAME's cursor had been `slot` (a fire time) since before it."""
    query(db, "UPDATE url SET push_slot = %s, next_check_at = %s + make_interval(secs => grace)"
              " WHERE url = %s RETURNING 1", (slot, slot, f"push://{name}"))


def test_a_job_that_pings_on_time_over_http_has_no_missed_slot(cli, db, listener):  # noqa: F811
    from sitewatch.db import pushstore
    expr, fired = daily_at(db, 10)                     # it fired 10 minutes ago
    token = add_push(cli, "job", "--cron", expr, "--grace", "1h")
    put_cursor(db, "job", fired)
    web = listener()
    assert web.get(f"/ping/{token}").status_code == 200      # the job ran and reported
    assert [r[:3] for r in results(db, "job")] == [(fired, True, None)]
    assert web.client.post(f"/ping/{token}").status_code == 200   # again: tomorrow's slot has not begun
    assert len(results(db, "job")) == 1
    assert scalar(db, "SELECT push_slot FROM url") == fired + timedelta(days=1)
    assert pushstore.record_missed(db, 100, "host:producer:1") == (0, 0)
    # /start then /fail: tomorrow's slot is settled failed at once, the run closed
    assert web.get(f"/ping/{token}/start").status_code == 200
    assert scalar(db, "SELECT next_check_at - push_started_at FROM url") == timedelta(hours=1)
    assert web.client.post(f"/ping/{token}/fail", content=b"disk full").status_code == 200
    assert [r[:4] for r in results(db, "job")][1] == (fired + timedelta(days=1), False, "failed",
                                                       "the job reported failure: disk full")
    assert query(db, "SELECT push_slot, push_started_at FROM url") == [(fired + timedelta(days=2), None)]


def test_a_job_that_stops_gets_missed_slots_from_sitewatch_run(cli, db, sitewatch):   # noqa: F811
    """The real producer: a job due every minute that reports, and one that stopped."""
    import httpx

    from tests.test_push import _answers, free_port
    port = free_port()
    tokens = {name: add_push(cli, name, "--cron", "* * * * *", "--grace", grace)
              for name, grace in (("steady", "2m"), ("stops", "1s"))}
    minute = scalar(db, "SELECT date_trunc('minute', now())")
    for name in tokens:
        put_cursor(db, name, minute)                         # this minute's fire is each one's cursor
    run = sitewatch(env={"SITEWATCH_WEB__LISTEN": f"127.0.0.1:{port}"})
    run.wait_for("producer started")
    web = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5)
    wait_until(lambda: _answers(web, "/ping/" + "A" * 32), 30, "the web child")
    assert web.get(f"/ping/{tokens['steady']}").status_code == 200
    wait_until(lambda: results(db, "stops"), 10, "the stopped job's missed slot")
    assert web.get(f"/ping/{tokens['steady']}").status_code == 200
    web.close()
    stops = results(db, "stops")
    assert [r[:3] for r in stops[:1]] == [(minute, False, "missed")], stops
    assert stops[0][3].startswith("no ping within the grace of 1 s after the fire time ")
    steady = results(db, "steady")
    assert steady[0][:3] == (minute, True, None) and all(r[1] for r in steady), steady


def test_a_stale_write_moves_nothing(cli, db):
    """The compare-and-set: a plan made from a cursor another writer moved since is refused."""
    from sitewatch.db import pushstore
    expr, fired = daily_at(db, 120)
    add_push(cli, "job", "--cron", expr, "--grace", "1h")
    put_cursor(db, "job", fired)
    url_id, slot, next_at = query(db, "SELECT id, push_slot, next_check_at FROM url")[0]
    stale = {"id": url_id, "seen_slot": slot - timedelta(days=1), "seen_next": next_at, "seen_started": None,
             "slot": slot, "cursor": slot + timedelta(days=1), "next": next_at + timedelta(days=1),
             "started": None, "skipped": 0, "ok": False, "error_kind": "missed", "error": "x", "message": None}
    assert pushstore._cron_settle(db, [stale], "host:producer:1", None) == (0, 0)
    assert count(db, "task_result") == 0 and scalar(db, "SELECT push_slot FROM url") == slot
    assert pushstore._cron_settle(db, [{**stale, "seen_slot": slot}], "host:producer:1", None) == (1, 1)


def test_two_producers_racing_record_each_missed_slot_once(cli, db, dsn):
    """Two hosts' missed-slot writers at once, on 200 cron monitors each three fires behind (one
    producer outage): each monitor gets one result (the latest slot), two slots skipped, once."""
    from sitewatch.db import pushstore
    expr, first = daily_at(db, 360, 240, 120)                # fired 6, 4 and 2 hours ago, daily
    add_push(cli, "m0", "--cron", expr, "--grace", "30m")
    query(db, "INSERT INTO url (url, period, timeout, grace, cron, tz, push_token_hash, push_slot, next_check_at)"
              " SELECT 'push://m' || i, period, timeout, grace, cron, tz, sha256(i::text::bytea), %s, %s"
              " FROM url, generate_series(1, 199) i RETURNING 1", (first, first + timedelta(minutes=30)))
    put_cursor(db, "m0", first)
    connections = [psycopg2.connect(dsn) for _ in range(2)]
    for conn in connections:
        conn.autocommit = True
    start, done = threading.Barrier(2), []

    def producer(conn, owner):
        start.wait()
        done.append(pushstore.record_missed(conn, 1000, owner))
    threads = [threading.Thread(target=producer, args=(conn, f"host{i}:producer:1"))
               for i, conn in enumerate(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for conn in connections:
        conn.close()
    assert sum(recorded for _, recorded in done) == 200, done
    rows = query(db, "SELECT u.push_slot, u.skipped_slots, s.fail_streak, array_agg(r.scheduled_at),"
                     " array_agg(r.error_kind) FROM url u JOIN url_state s ON s.url_id = u.id"
                     " JOIN task_result r ON r.url_id = u.id GROUP BY u.id, s.fail_streak")
    assert len(rows) == 200
    latest = first + timedelta(hours=4)
    assert {(slot, skipped, streak, tuple(slots), tuple(kinds)) for slot, skipped, streak, slots, kinds in rows} \
        == {(first + timedelta(days=1), 2, 1, (latest,), ("missed",))}
