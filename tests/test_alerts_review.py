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


# --- B13: removing a URL during an open incident


def _remove(dsn, url):
    c = psycopg2.connect(dsn)
    try:
        return store.remove_url(c, url, ["ops", "mail"])
    finally:
        c.close()


def test_removing_a_url_closes_its_open_incident_and_says_so(dsn, conn):  # noqa: F811
    from sitewatch.alerts.messages import render
    url = add_url(conn, failure_threshold=1)
    feed(conn, url, [False, False])
    (incident_id,) = q(conn, "SELECT id FROM incident")[0]
    assert _remove(dsn, "http://a.example/") == 1
    assert q(conn, "SELECT end_reason, ended_at IS NOT NULL FROM incident") == [("url removed", True)]
    assert alerts_store.list_incidents(conn, True, None) == []
    assert outbox(conn)[2:] == [("removed", "ops", f"incident:{incident_id}:removed"),
                                ("removed", "mail", f"incident:{incident_id}:removed")]
    kind, detail, key = q(conn, "SELECT kind, detail, key FROM alert_outbox ORDER BY id DESC LIMIT 1")[0]
    title, body, _ = render(kind, detail, key)
    assert title == "NO LONGER MONITORED: http://a.example/"
    assert "removed from monitoring while down" in body and "2 failed checks" in body
    q(conn, "UPDATE incident SET last_notice_at = now() - interval '1 day'")
    assert alerts_store.queue_reminders(conn, 60, ["ops"]) == 0, "no reminder for a closed incident"
    again = add_url(conn, failure_threshold=1)
    feed(conn, again, [False], start=5)
    assert q(conn, "SELECT count(*) FROM incident WHERE ended_at IS NULL") == [(1,)]


def test_removing_a_url_whose_down_was_never_announced_closes_it_quietly(dsn, conn):  # noqa: F811
    url = add_url(conn, failure_threshold=1)
    q(conn, SILENCE)
    feed(conn, url, [False])
    assert _remove(dsn, "http://a.example/") == 1
    assert q(conn, "SELECT end_reason FROM incident") == [("url removed",)] and outbox(conn) == []
    up = add_url(conn, "http://b.example/")
    feed(conn, up, [True])
    assert _remove(dsn, "http://b.example/") == 0 and outbox(conn) == []
