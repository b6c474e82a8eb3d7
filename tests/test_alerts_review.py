"""Alerts after the review of issue 24 (items A3, B7-B13), on a real PostgreSQL with real
receivers. Results go through store.complete_tasks exactly as a consumer writes them
(helpers from test_alert_state)."""

import psycopg2

from sitewatch.alerts import store as alerts_store
from sitewatch.db import store
from tests.test_alert_state import DEFAULTS, add_url, conn, feed, outbox, q, row, state  # noqa: F401

SILENCE = "INSERT INTO silence (pattern, like_pattern, ends_at) VALUES ('x', 'http://%%', now() + interval '1 hour')"


def _apply_across_the_silence_end(dsn, conn, url, slot_number, ok):  # noqa: F811 - the fixture
    """B7's race: a result statement that begins while the silence is in force, and commits
    after the silence ended and the notifier's settle sweep ran."""
    q(conn, SILENCE)
    writer = psycopg2.connect(dsn)          # a transaction, not autocommit: it starts here
    try:
        assert store.complete_tasks(writer, [row(conn, url, slot_number, ok)], DEFAULTS) == []
        q(conn, "SET statement_timeout = '20s'")
        q(conn, "UPDATE silence SET ends_at = now()")
        assert alerts_store.settle_silences(conn, ["ops"]) == 0, "the sweep sees the state before the commit"
        writer.commit()
    finally:
        writer.close()
    assert q(conn, "SELECT settled FROM silence") == [(True,)]


def test_a_down_applied_as_a_silence_ends_is_announced_by_the_next_result(dsn, conn):  # noqa: F811
    url = add_url(conn, failure_threshold=1, success_threshold=1)
    feed(conn, url, [True])
    _apply_across_the_silence_end(dsn, conn, url, 1, False)
    assert state(conn, url)[0] == "down" and outbox(conn) == []
    feed(conn, url, [False], start=2)
    (incident_id,) = q(conn, "SELECT id FROM incident")[0]
    assert outbox(conn) == [("down", "ops", f"incident:{incident_id}:down"),
                            ("down", "mail", f"incident:{incident_id}:down")]
    assert q(conn, "SELECT notified_state FROM url_state") == [("down",)]
    feed(conn, url, [False], start=3)
    assert len(outbox(conn)) == 2, "owed once"


def test_a_recovery_applied_as_a_silence_ends_is_announced_by_the_next_result(dsn, conn):  # noqa: F811
    url = add_url(conn, failure_threshold=1, success_threshold=1)
    feed(conn, url, [False])
    (incident_id,) = q(conn, "SELECT id FROM incident")[0]
    assert [k for k, *_ in outbox(conn)] == ["down", "down"]
    _apply_across_the_silence_end(dsn, conn, url, 1, True)
    assert state(conn, url)[0] == "up" and len(outbox(conn)) == 2
    feed(conn, url, [True], start=2)
    assert outbox(conn)[2:] == [("up", "ops", f"incident:{incident_id}:up"),
                                ("up", "mail", f"incident:{incident_id}:up")]
    detail = q(conn, "SELECT detail FROM alert_outbox ORDER BY id DESC LIMIT 1")[0][0]
    assert detail["after_silence"] is True and detail["failed_checks"] == 1


def test_no_notice_is_owed_while_silenced_or_when_nothing_changed(conn):  # noqa: F811
    url = add_url(conn, failure_threshold=1, success_threshold=1)
    feed(conn, url, [True, True, False, False, True, True])
    assert [k for k, *_ in outbox(conn)] == ["down", "down", "up", "up"]
    q(conn, SILENCE)
    feed(conn, url, [False, False], start=6)
    assert len(outbox(conn)) == 4
