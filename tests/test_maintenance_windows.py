"""Maintenance windows (issue 22): `sitewatch maintenance add|list|remove` on a real PostgreSQL.

Results go through store.complete_tasks as a consumer writes them (tests/test_alert_state.py),
notices through the real notifier to a webhook receiver on 127.0.0.1, figures through the real
`sitewatch status` and `sitewatch web`.
"""

import datetime
import json
import time

import pytest

from sitewatch.maintenance_windows.schedule import parse_window
from tests.alert_receivers import WebhookReceiver
from tests.conftest import count
from tests.conftest_web import WebServer
from tests.test_alert_state import add_url, connect, q, row
from tests.test_alerts_review import notifier_for, pump

UTC = datetime.timezone.utc
dt = datetime.datetime
DEFAULTS = {"failure_threshold": 3, "success_threshold": 2, "channels": ["hook"]}


@pytest.fixture
def conn(dsn):
    c = connect(dsn)
    yield c
    c.close()


def feed(conn, url_id, outcomes, start):
    """One result per slot (slots are minutes from T0, which only orders them: whether a
    result is inside a window is decided by the database's clock, as for a silence)."""
    from sitewatch.db import store
    for i, ok in enumerate(outcomes, start=start):
        store.complete_tasks(conn, [row(conn, url_id, i, ok)], DEFAULTS)
    return start + len(outcomes)


def write(conn, url_id, at, good):
    """One result for slot `at`, through complete_tasks as a consumer writes it."""
    from sitewatch.db import store
    task = q(conn, "INSERT INTO task (url_id, scheduled_at, available_at, status, attempts, lease_owner)"
                   " VALUES (%s, %s, now(), 1, 1, 'h:c:1') RETURNING id", (url_id, at))[0][0]
    store.complete_tasks(conn, [(task, 1, "h:c:1", at, 10.0, 200 if good else 503, None, good,
                                 None if good else "status", None, None)], DEFAULTS)


def ok(out):
    assert out.returncode == 0, out.stderr
    return out.stdout


# --- the notice owed when a window ends (Uptime Kuma #4004 got this wrong) ---------------------

def test_a_window_holds_notices_and_its_end_sends_the_one_owed(dsn, conn, cli):
    """Three sites under one glob: `a` goes down inside the window and stays down: its down
    goes out after the window. `b` goes down and comes back inside: nothing. `c` was down
    (announced) before the window and is up after it: its up goes out after the window."""
    a, b, c = (add_url(conn, f"http://{n}.maint.test/") for n in "abc")
    other = add_url(conn, "http://other.test/")
    n = feed(conn, c, [False] * 3, 0)                                   # before: c down, announced
    assert q(conn, "SELECT kind, url_id FROM alert_outbox") == [("down", c)]
    start = datetime.datetime.now(UTC)
    out = ok(cli("maintenance", "add", "http://*.maint.test/*", "--start", start.isoformat(),
                 "--duration", "10m", "--reason", "upgrade"))
    assert out.startswith("maintenance 1: http://*.maint.test/*")
    feed(conn, a, [False] * 3, n)
    feed(conn, b, [False] * 3 + [True] * 2, n)
    feed(conn, c, [True] * 2, n)
    feed(conn, other, [False] * 3, n)                                   # not covered: announced
    assert q(conn, "SELECT state FROM url_state WHERE url_id IN (%s, %s, %s) ORDER BY url_id",
             (a, b, c)) == [("down",), ("up",), ("up",)]
    assert q(conn, "SELECT kind, url_id FROM alert_outbox ORDER BY id") == [("down", c), ("down", other)]
    status = {r["url"]: r["state"] for r in json.loads(ok(cli("status", "--json")))}
    assert status == {"http://a.maint.test/": "maintenance", "http://b.maint.test/": "maintenance",
                      "http://c.maint.test/": "maintenance", "http://other.test/": "down"}
    with WebhookReceiver() as hook:
        notifier = notifier_for(dsn, {"hook": hook.apprise_url("json")})
        live = notifier.db.get()
        notifier.periodic(live)
        assert q(conn, "SELECT count(*) FROM alert_outbox") == [(2,)], "nothing owed while the window lasts"
        # the window's end, brought forward (as the clock would bring it in 10 minutes)
        q(conn, "UPDATE silence SET ends_at = now() WHERE maintenance_id = 1")
        notifier.next_sweep = 0.0
        notifier.periodic(live)                                         # the sweep after the end
        assert pump(notifier, lambda: len(hook.messages()) == 4)
        time.sleep(0.3)
        notifier.db.close()
        texts = hook.texts()
    assert len(texts) == 4                                              # nothing more than these
    after = q(conn, "SELECT kind, url_id, detail->>'after_silence' FROM alert_outbox WHERE id > 2 ORDER BY url_id")
    assert after == [("down", a, "true"), ("up", c, "true")]
    assert not [t for t in texts if "b.maint.test" in t]
    assert sum("a.maint.test" in t for t in texts) == 1 and sum("c.maint.test" in t for t in texts) == 2
    assert {r["url"]: r["state"] for r in json.loads(ok(cli("status", "--json")))}["http://a.maint.test/"] == "down"


def test_a_window_holds_degraded_and_recovered_and_its_end_sends_the_ones_owed(dsn, conn, cli):
    """The same for the degraded state (issue 19), through the real notifier and a webhook.
    `inside` turns degraded inside the window and stays so: its `degraded` goes out after.
    `recovers` was degraded (announced) before and is clean after: its `recovered` goes out.
    `back` was down (announced) before and is up but degraded after: its `up` goes out, and
    its `degraded` too (the state now differs from the last notice in both ways). `blip`
    turns degraded and recovers inside: nothing. `other` is not covered: announced at once."""
    from tests.test_alerts_run import keys
    from tests.test_degraded import feed as feed_results
    inside, recovers, back, blip = (add_url(conn, f"http://{n}.maint.test/")
                                    for n in ("inside", "recovers", "back", "blip"))
    other = add_url(conn, "http://other.test/")
    n = feed_results(conn, recovers, ["slow"] * 3, defaults=DEFAULTS)
    feed_results(conn, back, ["down"] * 3, defaults=DEFAULTS)
    assert q(conn, "SELECT kind, url_id FROM alert_outbox ORDER BY id") == [("degraded", recovers), ("down", back)]
    ok(cli("maintenance", "add", "http://*.maint.test/*", "--start", datetime.datetime.now(UTC).isoformat(),
           "--duration", "10m"))
    feed_results(conn, inside, ["slow"] * 3, n, defaults=DEFAULTS)
    feed_results(conn, recovers, ["up"] * 2, n, defaults=DEFAULTS)
    feed_results(conn, back, ["slow"] * 3, n, defaults=DEFAULTS)
    feed_results(conn, blip, ["slow"] * 3 + ["up"] * 2, n, defaults=DEFAULTS)
    feed_results(conn, other, ["slow"] * 3, n, defaults=DEFAULTS)
    assert q(conn, "SELECT url_id, state FROM url_state ORDER BY url_id") == [
        (inside, "degraded"), (recovers, "up"), (back, "degraded"), (blip, "up"), (other, "degraded")]
    assert q(conn, "SELECT kind, url_id FROM alert_outbox ORDER BY id") == [
        ("degraded", recovers), ("down", back), ("degraded", other)]
    with WebhookReceiver() as hook:
        notifier = notifier_for(dsn, {"hook": hook.apprise_url("json")})
        live = notifier.db.get()
        notifier.periodic(live)
        assert q(conn, "SELECT count(*) FROM alert_outbox") == [(3,)], "nothing owed while the window lasts"
        q(conn, "UPDATE silence SET ends_at = now() WHERE maintenance_id = 1")
        notifier.next_sweep = 0.0
        notifier.periodic(live)
        assert pump(notifier, lambda: len(hook.messages()) == 7)
        time.sleep(0.3)
        notifier.db.close()
        texts = hook.texts()
    assert len(texts) == 7                                              # nothing more than these
    after = q(conn, "SELECT url_id, kind, detail->>'after_silence' FROM alert_outbox WHERE id > 3 ORDER BY url_id, id")
    assert after == [(inside, "degraded", "true"), (recovers, "recovered", "true"),
                     (back, "up", "true"), (back, "degraded", "true")]
    assert not [t for t in texts if "blip.maint.test" in t]
    # one URL's notices reach a channel in the order they were queued
    assert [kind for kind, _ in keys(t for t in texts if "back.maint.test" in t)] == ["down", "up", "degraded"]


# --- uptime --------------------------------------------------------------------------------------

def test_slots_inside_a_window_count_neither_up_nor_down(dsn, conn, cli, tmp_path):
    """30 one-minute slots three hours ago; 10 failed inside a past window, 1 failed outside:
    uptime is 19/20, from raw rows, from the rollups and summary after `db maintain`, and on
    the web's API; a URL the window does not cover counts all its slots. The figures are
    truncated to 0.001 %, as status prints them."""
    base = (datetime.datetime.now(UTC) - datetime.timedelta(hours=3)).replace(second=0, microsecond=0)
    a, b = add_url(conn, "http://a.maint.test/"), add_url(conn, "http://b.other.test/")
    q(conn, "UPDATE url SET created_at = %s", (base - datetime.timedelta(hours=1),))
    for url_id in (a, b):
        for i in range(30):
            write(conn, url_id, base + datetime.timedelta(minutes=i), not (10 <= i < 20 or i == 25))
    start = (base + datetime.timedelta(minutes=10)).strftime("%Y-%m-%d %H:%M")
    ok(cli("maintenance", "add", "http://*.maint.test/*", "--start", start, "--duration", "10m"))

    def uptimes():
        rows = {r["url"]: r for r in json.loads(ok(cli("status", "--json")))}
        one = json.loads(ok(cli("status", "--json", "http://a.maint.test/")))[0]
        return (rows["http://a.maint.test/"]["uptime_24h"], one["uptime_24h"],
                rows["http://b.other.test/"]["uptime_24h"])

    web = WebServer(tmp_path, dsn)
    try:
        def on_the_web():
            item = web.client.get(f"/api/v1/urls/{a}").json()
            days = web.client.get(f"/api/v1/urls/{a}/daily").json()["days"]
            # the summary's windows alone: read from the job's summary (summary_read) once built
            summed = web.client.get(f"/api/v1/urls/{a}/uptime?windows=24h,7d,30d").json()["windows"]
            assert summed["24h"]["uptime"] == item["uptime_24h"]
            return item["uptime_24h"], sum(d["ok"] for d in days), sum(d["failed"] for d in days)

        assert uptimes() == (0.95, 0.95, 0.63333)                      # raw rows
        assert on_the_web() == (0.95, 19, 1)
        ok(cli("db", "maintain"))
        assert uptimes() == (0.95, 0.95, 0.63333)                      # rollups and the summary
        assert on_the_web() == (0.95, 19, 1)
        # Raw rows after the summary's end, inside a window in force now (status_lines and
        # summary_read add those rows to the summary's counts); status shows it as maintenance.
        now = datetime.datetime.now(UTC)
        ok(cli("maintenance", "add", "http://a.maint.test/", "--start", now.isoformat(), "--duration", "10m"))
        for m in (1, 2, 3):
            write(conn, a, now + datetime.timedelta(minutes=m), False)
        assert uptimes() == (0.95, 0.95, 0.63333)
        assert on_the_web() == (0.95, 19, 1)
        states = {r["url"]: r["state"] for r in json.loads(ok(cli("status", "--json")))}
        assert states == {"http://a.maint.test/": "maintenance", "http://b.other.test/": "up"}
        table = ok(cli("status")).splitlines()
        assert [line.split()[1] for line in table[1:]] == ["maintenance", "up"]
    finally:
        web.stop()
    assert q(conn, "SELECT sum(checks), sum(ok), sum(failed) FROM rollup_hour WHERE url_id = %s", (a,)) \
        == [(30, 19, 1)], "the slots are stored and checked, only not counted"


# --- DST -----------------------------------------------------------------------------------------

def _daily(every, since, until):
    window = parse_window("2026-03-01 02:30", "1h", every, "Europe/Berlin")
    return [start for start, _ in window.occurrences(since, until)]


@pytest.mark.parametrize("every", ["day", "30 2 * * *"])
def test_a_daily_0230_window_neither_vanishes_nor_doubles_when_the_clocks_skip_it(every):
    """Europe/Berlin skips 02:00-03:00 on 2026-03-29: that day's window starts at the change
    (03:00 CEST, 01:00 UTC); the days around it at 02:30 local."""
    starts = _daily(every, dt(2026, 3, 27, tzinfo=UTC), dt(2026, 4, 1, tzinfo=UTC))
    assert starts == [dt(2026, 3, 27, 1, 30, tzinfo=UTC), dt(2026, 3, 28, 1, 30, tzinfo=UTC),
                      dt(2026, 3, 29, 1, 0, tzinfo=UTC), dt(2026, 3, 30, 0, 30, tzinfo=UTC),
                      dt(2026, 3, 31, 0, 30, tzinfo=UTC)]


@pytest.mark.parametrize("every", ["day", "30 2 * * *"])
def test_a_daily_0230_window_happens_once_when_the_clocks_repeat_it(every):
    """Europe/Berlin repeats 02:00-03:00 on 2026-10-25: one window, at the first 02:30 (CEST)."""
    starts = _daily(every, dt(2026, 10, 24, tzinfo=UTC), dt(2026, 10, 27, tzinfo=UTC))
    assert starts == [dt(2026, 10, 24, 0, 30, tzinfo=UTC), dt(2026, 10, 25, 0, 30, tzinfo=UTC),
                      dt(2026, 10, 26, 1, 30, tzinfo=UTC)]


def test_a_weekly_window_follows_the_weekday_of_its_start_across_the_change():
    window = parse_window("2026-03-22 02:30", "2h", "week", "Europe/Berlin")      # a Sunday
    starts = [s for s, _ in window.occurrences(dt(2026, 3, 1, tzinfo=UTC),
                                               dt(2026, 4, 6, tzinfo=UTC))]
    assert starts == [dt(2026, 3, 22, 1, 30, tzinfo=UTC), dt(2026, 3, 29, 1, 0, tzinfo=UTC),
                      dt(2026, 4, 5, 0, 30, tzinfo=UTC)]


# --- the command ---------------------------------------------------------------------------------

def test_recurring_windows_are_written_ahead_listed_and_removed(dsn, conn, cli):
    url = add_url(conn, "http://a.maint.test/")
    now = datetime.datetime.now(UTC)
    start = (now - datetime.timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M")
    out = ok(cli("maintenance", "add", "http://a.maint.test/", "--start", start, "--duration", "1h",
                 "--every", "day", "--reason", "nightly backup"))
    assert "every day" in out
    occurrences = q(conn, "SELECT starts_at, ends_at FROM silence WHERE maintenance_id = 1 ORDER BY starts_at")
    assert len(occurrences) == 2 and occurrences[1][0] - occurrences[0][0] == datetime.timedelta(days=1)
    # the notifier plans ahead, once per occurrence however often it runs
    notifier = notifier_for(dsn, {})
    live = notifier.db.get()
    q(conn, "DELETE FROM silence WHERE starts_at > now()")
    notifier.periodic(live)
    notifier.next_plan = 0.0
    notifier.periodic(live)
    notifier.db.close()
    assert q(conn, "SELECT starts_at, ends_at FROM silence WHERE maintenance_id = 1 ORDER BY starts_at") == occurrences
    listed = json.loads(ok(cli("maintenance", "list", "--json")))
    assert [(w["id"], w["pattern"], w["every"], w["duration"], w["tz"], w["active"], w["reason"])
            for w in listed] == [(1, "http://a.maint.test/", "day", 3600, "UTC", True, "nightly backup")]
    assert "nightly backup" in ok(cli("maintenance", "list"))
    assert ok(cli("silence", "list")).strip() == "no silences", "a window's occurrences are not silences"
    assert json.loads(ok(cli("status", "--json")))[0]["state"] == "maintenance"
    assert ok(cli("maintenance", "remove", "1")).startswith("maintenance 1 removed")
    assert q(conn, "SELECT count(*), bool_and(ends_at <= now()) FROM silence") == [(1, True)], \
        "the occurrence in force ends now (for the notice owed); those to come are gone"
    assert ok(cli("maintenance", "list")).strip() == "no maintenance windows"
    assert json.loads(ok(cli("status", "--json")))[0]["state"] == "unknown"
    del url


def test_a_name_stands_for_its_url(conn, cli):
    ok(cli("url", "add", "http://a.maint.test/", "--name", "shop"))
    out = ok(cli("maintenance", "add", "shop", "--start", "2030-01-01 00:00", "--duration", "1h"))
    assert q(conn, "SELECT pattern FROM maintenance") == [("http://a.maint.test/",)]
    # a one-off window years ahead still has its occurrence to come
    assert out.endswith("once; first 2030-01-01 00:00 UTC\n"), out
    assert json.loads(ok(cli("maintenance", "list", "--json")))[0]["next_start"] == "2030-01-01T00:00:00+00:00"


def test_a_glob_is_over_urls_and_one_that_matches_only_names_is_refused(conn, cli):
    """A glob covers the URLs it matches (README), not names: `shop-*` matching only the names
    of monitors would cover nothing, so it is refused (exit 2, nothing written) naming them,
    for silences too; a URL glob covers the named monitors' URLs, and a glob that matches
    nothing yet is kept for URLs added later."""
    ok(cli("url", "add", "http://a.maint.test/", "--name", "shop-api"))
    ok(cli("url", "add", "http://b.maint.test/", "--name", "shop-web"))
    for command in (["maintenance", "add", "shop-*", "--start", "2030-01-01 00:00", "--duration", "1h"],
                    ["silence", "add", "shop-*", "--for", "1h"]):
        out = cli(*command)
        assert out.returncode == 2 and out.stdout == "", out.stderr
        assert out.stderr == ("sitewatch: error: 'shop-*' matches no monitored URL, only the names of "
                              "shop-api, shop-web: a glob is over URLs (e.g. 'https://*.example.com/*'); "
                              "give a name alone to cover its monitor's URL\n")
    assert count(conn, "maintenance") == 0 and count(conn, "silence") == 0 and count(conn, "audit") == 2
    start = datetime.datetime.now(UTC).isoformat()
    ok(cli("maintenance", "add", "http://*.maint.test/*", "--start", start, "--duration", "1h"))
    ok(cli("maintenance", "add", "http://later.test/*", "--start", start, "--duration", "1h"))
    states = {r["url"]: r["state"] for r in json.loads(ok(cli("status", "--json")))}
    assert states == {"http://a.maint.test/": "maintenance", "http://b.maint.test/": "maintenance"}


@pytest.mark.parametrize("args, message", [
    (["http://nowhere.test/"], "not monitored"),
    (["nosuchname"], "no monitor is named"),
    (["ftp://x/"], "URL scheme"),
    (["http://*", "--start", "2026-13-01 00:00"], "--start must be a date and time"),
    (["http://*", "--start", "2026-12-01"], "--start needs a time of day"),
    (["http://*", "--duration", "0s"], "--duration"),
    (["http://*", "--duration", "soon"], "duration must look like"),
    (["http://*", "--duration", "400d"], "--duration"),
    (["http://*", "--tz", "Mars/Olympus"], "unknown time zone"),
    (["http://*", "--every", "61 * * * *"], "cron must be"),
    (["http://*", "--every", "fortnight"], "cron must be"),
    (["http://*", "--every", "day", "--start", "2030-01-01 00:00:30"], "no seconds"),
    (["http://*", "--start", "2026-03-29 02:30", "--tz", "Europe/Berlin"], "does not exist in Europe/Berlin"),
    (["http://*", "--reason", "two\nlines"], "--reason"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(conn, cli, args, message):
    add_url(conn, "http://a.maint.test/")
    full = {"--start": "2030-01-01 00:00", "--duration": "1h"}
    rest = args[1:]
    for flag in ("--start", "--duration"):
        if flag not in rest:
            rest += [flag, full[flag]]
    out = cli("maintenance", "add", args[0], *rest)
    assert out.returncode == 2 and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1 and message in out.stderr, out.stderr
    assert count(conn, "maintenance") == 0 and count(conn, "silence") == 0


def test_one_off_windows_expire_after_raw_days_and_recurring_ones_stay(conn, cli):
    add_url(conn, "http://a.maint.test/")
    old = (datetime.datetime.now(UTC) - datetime.timedelta(days=3)).strftime("%Y-%m-%d %H:%M")
    recent = (datetime.datetime.now(UTC) - datetime.timedelta(hours=20)).strftime("%Y-%m-%d %H:%M")
    ok(cli("maintenance", "add", "http://*", "--start", old, "--duration", "1h"))
    ok(cli("maintenance", "add", "http://*", "--start", recent, "--duration", "1h"))
    ok(cli("maintenance", "add", "http://*", "--start", old, "--duration", "1h", "--every", "day"))
    done = ok(cli("db", "maintain", env={"SITEWATCH_HISTORY__RAW_DAYS": "2"}))
    assert q(conn, "SELECT id, every FROM maintenance ORDER BY id") == [(2, None), (3, "day")], done


def test_removing_an_unknown_window_exits_2(cli):
    for arg, message in (("7", "no maintenance window with id 7"), ("x", "must be a number")):
        out = cli("maintenance", "remove", arg)
        assert out.returncode == 2 and message in out.stderr and len(out.stderr.splitlines()) == 1


def test_the_page_shows_maintenance(dsn, conn, cli, tmp_path):
    url = add_url(conn, "http://a.maint.test/")
    add_url(conn, "http://b.other.test/")
    ok(cli("maintenance", "add", "http://a.maint.test/", "--start",
           datetime.datetime.now(UTC).isoformat(), "--duration", "1h"))
    web = WebServer(tmp_path, dsn)
    try:
        page = web.client.get("/").text
        assert '<span class="state maintenance">maintenance</span>' in page
        assert page.count('class="state maintenance"') == 1
        assert "maintenance" in web.client.get(f"/urls/{url}").text
        assert web.client.get(f"/api/v1/urls/{url}").json()["state"] == "maintenance"
        badge = web.client.get(f"/badge/{url}/status.svg")
        assert badge.status_code == 200 and "maintenance" in badge.text
    finally:
        web.stop()
