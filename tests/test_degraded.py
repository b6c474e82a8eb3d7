"""The degraded state (DESIGN.md section 12) on a real PostgreSQL: results written through
store.complete_tasks as a consumer writes them move url_state to degraded and back, with the
`degraded` and `recovered` notices in the outbox and no incident.

The end-to-end run (sitewatch run, a local site, notices received by a local webhook) is at
the end of this file.
"""

import pytest

from sitewatch.db import store
from tests.alert_receivers import Site, WebhookReceiver
from tests.test_alert_state import DEFAULTS, add_url, connect, outbox, q, row
from tests.test_alerts_run import alert_env, keys, settled

# `sitewatch` is test_run's fixture (each test's `sitewatch run` processes, killed at teardown).
from tests.test_run import query, scalar, sitewatch, wait_until  # noqa: F401


@pytest.fixture
def conn(dsn):
    c = connect(dsn)
    yield c
    c.close()


def feed(conn, url_id, outcomes, start=0, defaults=DEFAULTS):
    """One result per slot: 'up' clean, 'slow' ok but degraded, 'down' failed."""
    for i, outcome in enumerate(outcomes, start=start):
        result = row(conn, url_id, i, outcome != "down")
        if outcome == "slow":
            result = result[:9] + ("response_time < 800: got 950 ms",) + result[10:]
        # `degraded` is the last result field (those between are left null)
        result += (None,) * (len(store.RESULT_FIELDS) - 1 - len(result)) + (outcome == "slow",)
        assert store.complete_tasks(conn, [result], defaults) == []
    return start + len(outcomes)


def current(conn, url_id):
    return q(conn, "SELECT state, degraded_streak, clean_streak FROM url_state WHERE url_id = %s", (url_id,))[0]


def test_failure_threshold_degraded_results_turn_it_degraded_and_success_threshold_clean_ones_back_up(conn):
    url = add_url(conn)
    n = feed(conn, url, ["up", "up", "slow", "slow"])
    assert current(conn, url) == ("up", 2, 0)             # two of three: not yet
    n = feed(conn, url, ["slow"], n)
    assert current(conn, url) == ("degraded", 3, 0)
    assert outbox(conn) == [("degraded", "ops", f"degraded:{url}:1:start"),
                            ("degraded", "mail", f"degraded:{url}:1:start")]
    detail = q(conn, "SELECT detail FROM alert_outbox LIMIT 1")[0][0]
    assert detail["error"] == "response_time < 800: got 950 ms"
    n = feed(conn, url, ["up", "slow", "up"], n)           # a clean streak broken: still degraded
    assert current(conn, url)[0] == "degraded"
    n = feed(conn, url, ["up"], n)
    assert current(conn, url) == ("up", 0, 2)
    assert [k for k, _, _ in outbox(conn)][2:] == ["recovered", "recovered"]
    assert q(conn, "SELECT count(*) FROM incident") == [(0,)]   # incidents are for down only
    # a second episode gets its own keys
    feed(conn, url, ["slow", "slow", "slow"], n)
    assert outbox(conn)[-1][2] == f"degraded:{url}:2:start"


def test_a_degraded_url_that_fails_goes_down_with_an_incident_and_comes_back_up(conn):
    url = add_url(conn)
    n = feed(conn, url, ["slow", "slow", "slow"])
    assert current(conn, url)[0] == "degraded"
    n = feed(conn, url, ["down", "down", "down"], n)
    assert current(conn, url)[0] == "down"
    assert q(conn, "SELECT count(*) FROM incident WHERE ended_at IS NULL") == [(1,)]
    feed(conn, url, ["slow", "slow"], n)                   # degraded results count as ok toward up
    assert current(conn, url)[0] == "up"
    assert [k for k, channel, _ in outbox(conn) if channel == "ops"] == ["degraded", "down", "up"]


def test_notify_degraded_false_moves_the_state_but_sends_nothing(conn):
    url = add_url(conn)
    quiet = {**DEFAULTS, "notify_degraded": False}
    n = feed(conn, url, ["slow", "slow", "slow"], defaults=quiet)
    assert current(conn, url)[0] == "degraded"
    feed(conn, url, ["up", "up"], n, defaults=quiet)
    assert current(conn, url)[0] == "up"
    assert outbox(conn) == []


def test_degraded_is_stored_on_the_result(conn):
    url = add_url(conn)
    feed(conn, url, ["slow", "up", "down"])
    assert q(conn, "SELECT ok, degraded FROM task_result ORDER BY scheduled_at") == [
        (True, True), (True, False), (False, False)]


def test_a_silence_holds_degraded_and_recovered_and_its_end_announces_what_changed_inside(conn):
    from sitewatch.alerts import messages
    from sitewatch.alerts import store as alerts_store
    channels = DEFAULTS["channels"]
    inside, recovers, stays, bounced, blip = (add_url(conn, f"http://{n}.example/")
                                              for n in ("inside", "recovers", "stays", "bounced", "blip"))
    # Before the silence: three degraded and announced; `bounced` then down and up again, announced.
    for url in (recovers, stays):
        feed(conn, url, ["slow"] * 3)
    feed(conn, bounced, ["slow"] * 3 + ["down"] * 3 + ["up"] * 2)
    before = outbox(conn)
    assert [kind for kind, channel, _ in before if channel == "ops"] == ["degraded"] * 3 + ["down", "up"]

    q(conn, "INSERT INTO silence (pattern, like_pattern, ends_at) VALUES ('x', 'http://%%', now() + interval '1h')")
    feed(conn, inside, ["slow"] * 3)                 # degraded inside, still degraded: owed `degraded`
    feed(conn, recovers, ["up"] * 2, start=3)        # recovered inside: owed `recovered`
    feed(conn, blip, ["slow"] * 3 + ["up"] * 2)      # degraded and recovered inside: nothing to say
    feed(conn, stays, ["slow"], start=3)             # degraded all along, announced before: nothing
    assert outbox(conn) == before
    assert alerts_store.settle_silences(conn, channels) == 0, "still in force"

    q(conn, "UPDATE silence SET ends_at = now()")
    assert alerts_store.settle_silences(conn, channels) == 4
    assert sorted(outbox(conn)[len(before):]) == sorted(
        [("degraded", ch, f"degraded:{inside}:1:start") for ch in channels]
        + [("recovered", ch, f"degraded:{recovers}:1:end") for ch in channels])
    detail = q(conn, "SELECT detail FROM alert_outbox WHERE key = %s LIMIT 1", (f"degraded:{inside}:1:start",))[0][0]
    assert (detail["error"], detail["degraded_checks"], detail["after_silence"]) \
        == ("response_time < 800: got 950 ms", 3, True)
    _, body, _ = messages.render("degraded", detail, "k")
    assert "(reported after a silence)" in body and "got 950 ms" in body
    assert alerts_store.settle_silences(conn, channels) == 0, "settled once"

    # alerts.notify_degraded false: a silence's end owes no degraded notice either
    quiet = add_url(conn, "http://quiet.example/")
    q(conn, "INSERT INTO silence (pattern, like_pattern, ends_at)"
            " VALUES ('y', 'http://quiet%%', now() + interval '1h')")
    feed(conn, quiet, ["slow"] * 3)
    q(conn, "UPDATE silence SET ends_at = now() WHERE pattern = 'y'")
    assert alerts_store.settle_silences(conn, channels, notify_degraded=False) == 0


# --- end to end: sitewatch run, a local site, a local webhook -----------------------------------

def test_a_degraded_run_turns_the_state_degraded_and_back_up_with_the_notices_received(sitewatch, cli, db):  # noqa: F811
    # 203 is up (expected status 200-399) but degraded by `status == 200`; 200 is clean. Slots:
    # 200 203 (up after two good) 203 203 (three degraded: degraded) 200 200 (two clean: up).
    with Site() as site, WebhookReceiver() as hook:
        site.script("/api", [200, 203, 203, 203, 200, 200])
        run = sitewatch(env=alert_env({"hook": hook.apprise_url("json")}))
        run.wait_started()
        run.wait_for("notifier started")
        done = cli("url", "add", site.url("/api"), "-p", "1", "--degraded", "status == 200",
                   env={"MIN_PERIOD": "1"})
        assert done.returncode == 0, done.stderr
        wait_until(lambda: len(hook.texts()) >= 2, 60, "a degraded and a recovered notice")
        settled(db)     # nothing more may follow
        assert [kind for kind, _ in keys(hook.texts())] == ["degraded", "recovered"]
        degraded, recovered = hook.texts()
        assert "is up but degraded since" in degraded and "status == 200: got 203" in degraded
        assert "is no longer degraded" in recovered
        assert scalar(db, "SELECT state FROM url_state") == "up"
        assert scalar(db, "SELECT count(*) FROM incident") == 0
        assert query(db, "SELECT ok, degraded FROM task_result ORDER BY scheduled_at LIMIT 6") == [
            (True, False), (True, True), (True, True), (True, True), (True, False), (True, False)]


def test_status_shows_the_degraded_state_and_degraded_24h(conn, cli, db):
    import datetime
    import json

    url = q(conn, "INSERT INTO url (url, period, timeout, next_check_at, degraded) VALUES ('http://a.example/',"
                  " 60, 5, now() + interval '1 day', '{\"response_time < 800\"}') RETURNING id")[0][0]
    plain = add_url(conn, "http://b.example/")
    now = q(conn, "SELECT now()")[0][0]
    for uid, outcomes in ((url, ["up", "slow", "slow", "slow"]), (plain, ["up", "up"])):
        for i, outcome in enumerate(outcomes):
            at = now - datetime.timedelta(minutes=10 - i)
            task = q(conn, "INSERT INTO task (url_id, scheduled_at, available_at, status, attempts, lease_owner)"
                           " VALUES (%s, %s, now(), 1, 1, 'h:c:1') RETURNING id", (uid, at))[0][0]
            result = (task, 1, "h:c:1", at, 10.0, 200, None, True, None,
                      "response_time < 800: got 950 ms" if outcome == "slow" else None, None)
            result += (None,) * (len(store.RESULT_FIELDS) - 1 - len(result)) + (outcome == "slow",)
            assert store.complete_tasks(conn, [result], DEFAULTS) == []
    # before the uptime summary exists (figures computed in Python), then after the maintenance
    # job built it (computed in SQL, report.status_lines): the same answer
    for step in ("python", "sql"):
        if step == "sql":
            assert cli("db", "maintain").returncode == 0
        done = cli("status", "--json")
        assert done.returncode == 0, done.stderr
        lines = {line["url"]: line for line in json.loads(done.stdout)}
        assert lines["http://a.example/"]["state"] == "degraded"
        assert lines["http://a.example/"]["degraded_24h"] == 0.75
        assert lines["http://a.example/"]["uptime_24h"] == 1.0          # degraded counts as up
        assert (lines["http://b.example/"]["state"], lines["http://b.example/"]["degraded_24h"]) == ("up", 0.0)
    table = cli("status", "http://a.example/")
    assert table.returncode == 0 and "degraded" in table.stdout
    # `url list` says what the latest result was: up, but degraded, and by which expression
    listed = {line.split()[0]: line for line in cli("url", "list").stdout.splitlines()[1:]}
    assert listed["http://a.example/"].split()[4] == "DEGRADED"
    assert "degraded: response_time < 800: got 950 ms" in listed["http://a.example/"]
    assert listed["http://b.example/"].split()[4] == "UP"
    assert [row["last_degraded"] for row in json.loads(cli("url", "list", "--json").stdout)] == [True, False]
