"""Alerts end to end: the real `sitewatch run` (producer, consumers, notifier) against a site
the test controls, delivering to real receivers on 127.0.0.1: an HTTP receiver for json://,
a Mattermost (Slack-compatible) webhook receiver for mmost://, and a real SMTP server
(aiosmtpd) for mailto://.

Periods are 1 s and retries short, so each test takes seconds; every wait has a deadline.
"""

import json
import re
import time

import pytest

from tests.alert_receivers import Site, SmtpReceiver, WebhookReceiver

# `sitewatch` is test_run's fixture (each test's `sitewatch run` processes, killed at teardown).
from tests.test_run import query, scalar, sitewatch, wait_until  # noqa: F401

KEY = re.compile(r"\[sitewatch (\w+) (\S+)\]")


@pytest.fixture
def site():
    with Site() as s:
        yield s


@pytest.fixture
def hook():
    with WebhookReceiver() as r:
        yield r


@pytest.fixture
def chat():
    with WebhookReceiver() as r:
        yield r


@pytest.fixture
def smtp():
    with SmtpReceiver() as r:
        yield r


def alert_env(channels: dict, **extra) -> dict:
    env = {"SITEWATCH_ALERTS__CHANNELS": json.dumps(channels),
           "SITEWATCH_ALERTS__SEND_TIMEOUT": 3, "SITEWATCH_ALERTS__RETRY_BACKOFF": 0.5,
           "SITEWATCH_ALERTS__MAX_ATTEMPTS": 3}
    env.update(extra)
    return env


def keys(texts) -> list[tuple[str, str]]:
    """(kind, idempotency key) of each message text."""
    return [m.groups() for m in (KEY.search(t) for t in texts) if m]


def kinds(texts) -> list[str]:
    return [kind for kind, _ in keys(texts)]


def mail_texts(smtp) -> list[str]:
    return [m["data"].replace("=\r\n", "") for m in smtp.messages()]


def add(cli, url, period=1, env=None):
    done = cli("url", "add", url, "-p", str(period), env={"MIN_PERIOD": "1", **(env or {})})
    assert done.returncode == 0, done.stderr


def outbox_states(db) -> list[tuple]:
    return query(db, "SELECT kind, channel, status, attempts FROM alert_outbox ORDER BY id")


# --- 1. thresholds: 2 failures + a success send nothing; 3 failures one down; 2 successes one up


def test_down_after_three_failures_and_up_after_two_successes_on_every_channel(
        sitewatch, cli, db, site, hook, chat, smtp):  # noqa: F811
    channels = {"hook": hook.apprise_url("json"), "chat": chat.apprise_url("mmost", "tok"),
                "mail": smtp.apprise_url()}
    site.script("/a", [503, 503, 200, 503, 503, 503, 200, 200])
    run = sitewatch(env=alert_env(channels))
    run.wait_started()
    run.wait_for("notifier started")
    add(cli, site.url("/a"))
    wait_until(lambda: len(hook.texts()) >= 2 and len(chat.texts()) >= 2 and len(smtp.messages()) >= 2,
               30, "a down and an up on every channel")
    time.sleep(2)   # nothing more may follow
    for texts in (hook.texts(), chat.texts(), mail_texts(smtp)):
        assert kinds(texts) == ["down", "up"], texts
    down, up = hook.texts()
    assert "is down since" in down and "status: HTTP 503" in down
    assert "up again after" in up
    started, failed = query(db, "SELECT started_at, failed_checks FROM incident")[0]
    slots = [r[0] for r in query(db, "SELECT scheduled_at FROM task_result ORDER BY scheduled_at")]
    assert started == slots[3], "the incident starts at the first failed slot of the streak of three"
    assert failed == 3
    # The same key on every channel: one event.
    assert keys(hook.texts()) == keys(chat.texts()) == keys(mail_texts(smtp))
    assert all(status == "sent" for _, _, status, _ in outbox_states(db))


# --- 3. kill -9 of every process during an outage, then a restart


def test_kill_9_during_an_outage_neither_repeats_the_down_nor_loses_the_up(sitewatch, cli, db, site, hook):  # noqa: F811
    site.status = 503
    env = alert_env({"hook": hook.apprise_url("json")})
    run = sitewatch(env=env)
    run.wait_started()
    add(cli, site.url("/b"))
    wait_until(lambda: kinds(hook.texts()) == ["down"], 30, "the down notice")
    run.kill_group()
    again = sitewatch(env=env)
    again.wait_started()
    again.wait_for("notifier started")
    checks = scalar(db, "SELECT count(*) FROM task_result")
    wait_until(lambda: scalar(db, "SELECT count(*) FROM task_result") >= checks + 3, 20, "more failed checks")
    assert kinds(hook.texts()) == ["down"], "no second down after the restart"
    site.status = 200
    wait_until(lambda: kinds(hook.texts()) == ["down", "up"], 30, "the up notice after the restart")
    assert scalar(db, "SELECT count(*) FROM incident") == 1


# --- 4. the notifier killed between claiming and sending, and between sending and marking


def test_a_killed_notifier_loses_no_notice_and_a_repeat_carries_the_same_key(sitewatch, cli, db, site, hook):  # noqa: F811
    site.status = 503
    run = sitewatch(env=alert_env({"hook": hook.apprise_url("json")}, SITEWATCH_ALERTS__SEND_TIMEOUT=4))
    run.wait_started()
    run.wait_for("notifier started")
    hook.blackhole()      # the request goes into the listen backlog: claimed, never received
    add(cli, site.url("/c"))
    wait_until(lambda: outbox_states(db) and outbox_states(db)[0][2] == "sending", 20, "the down being sent")
    time.sleep(0.5)
    run.child("sitewatch: notifier").kill()
    hook.reopen()         # the black-holed request is dropped unread
    wait_until(lambda: kinds(hook.texts()) == ["down"], 30, "the down after the lease expired")
    assert len(hook.requests) == 1, "claimed-but-unsent: delivered exactly once"

    hook.hang = True      # received, never answered: sent but not marked
    site.status = 200
    wait_until(lambda: len(hook.requests) == 2, 20, "the up being received")
    run.child("sitewatch: notifier").kill()
    hook.hang = False
    wait_until(lambda: kinds(hook.texts()) == ["down", "up"], 30, "the up resent after the lease expired")
    up_keys = [KEY.search(str(r["body"].get("message"))).group(2) for r in hook.requests[1:]]
    assert len(up_keys) >= 2 and len(set(up_keys)) == 1, f"a repeat carries the same key: {up_keys}"
    assert [s for _, _, s, _ in outbox_states(db)] == ["sent", "sent"]
