"""The notifier's recovery paths (issue 25 §4.6), driven step by step in this process on a real
PostgreSQL with real receivers: a notice for a channel another host has, and an Apprise plugin
that raises. (Lease losses and a channel unknown everywhere, in a real run: test_alerts_run.)"""

from tests.alert_receivers import WebhookReceiver
from tests.test_alert_state import conn, q  # noqa: F401
from tests.test_alerts_review import notifier_for, pump, queue

DOWN = {"url": "http://a.example/", "since": "2026-12-06T12:00:00+00:00", "error_kind": "status",
        "error": "HTTP 503"}


def _row(conn, outbox_id):  # noqa: F811 - the fixture
    return q(conn, "SELECT status, attempts, last_error FROM alert_outbox WHERE id = %s", (outbox_id,))[0]


def test_a_notice_for_a_channel_this_host_lacks_is_left_to_a_host_that_has_it(dsn, conn):  # noqa: F811
    """Hosts whose alerts.channels differ (a configuration being rolled out): a notice for a channel
    this host does not have is not taken here while it is new, so the host that has the channel
    sends it; one nobody took for ten minutes is taken and failed with an error saying why."""
    with WebhookReceiver() as here, WebhookReceiver() as there:
        mine = queue(conn, 1, "down", DOWN, channel="hook")
        theirs = queue(conn, 1, "down", DOWN, channel="chat")
        this_host = notifier_for(dsn, {"hook": here.apprise_url("json")})
        assert pump(this_host, lambda: _row(conn, mine)[0] == "sent")
        this_host.claim(this_host.db.get())           # one more look: the other channel's notice stays
        assert not this_host.in_flight
        assert _row(conn, theirs) == ("pending", 0, None)

        other_host = notifier_for(dsn, {"chat": there.apprise_url("json")})
        assert pump(other_host, lambda: _row(conn, theirs)[0] == "sent")
        assert _row(conn, theirs)[1] == 1 and len(there.texts()) == 1 and len(here.texts()) == 1

        # A channel no host has: left alone while new, failed once ten minutes old (then retried,
        # and dead after max_attempts, as any failed notice), so it never waits for ever.
        fresh = queue(conn, 2, "down", DOWN, channel="gone")
        stale = queue(conn, 3, "down", DOWN, channel="gone")
        q(conn, "UPDATE alert_outbox SET created_at = now() - interval '10 minutes 5 seconds' WHERE id = %s",
          (stale,))
        assert pump(this_host, lambda: _row(conn, stale)[2] is not None)
        status, attempts, error = _row(conn, stale)
        assert (status, attempts) == ("pending", 1), (status, attempts)
        assert "unknown channel 'gone'" in error and "on this host" in error, error
        assert _row(conn, fresh) == ("pending", 0, None)
        this_host.db.close()
        other_host.db.close()


def test_an_apprise_plugin_that_raises_fails_its_notice_alone(dsn, conn):  # noqa: F811
    """A channel whose Apprise plugin raises (a plugin bug): its notice fails with a readable error,
    is retried and ends dead; the notifier goes on, and the other channel's notice is sent."""
    from apprise.decorators import notify

    @notify(on="swraise", name="sitewatch test: a plugin that raises")
    def _raises(body, title, notify_type, *args, **kwargs):
        raise RuntimeError("plugin bug")

    with WebhookReceiver() as hook:
        broken = queue(conn, 1, "down", DOWN, channel="broken")
        fine = queue(conn, 2, "down", DOWN, channel="hook")
        notifier = notifier_for(dsn, {"broken": "swraise://", "hook": hook.apprise_url("json")},
                                max_attempts=2, retry_backoff=0.1)
        assert pump(notifier, lambda: _row(conn, broken)[0] == "dead" and _row(conn, fine)[0] == "sent")
        status, attempts, error = _row(conn, broken)
        assert attempts == 2 and "exception" in error.lower(), error
        assert len(hook.texts()) == 1
        notifier.db.close()


def test_an_apprise_call_that_raises_fails_its_notice_alone_with_the_secret_redacted(dsn, conn, monkeypatch):  # noqa: F811
    """Apprise catches what its plugins raise (above), so for the notifier's own guard to run,
    Apprise itself must raise: its notify() does here for one channel, quoting the channel's URL
    as a library bug might. The notice fails with the exception named and the URL's secret
    redacted, and the other channel's notice is sent: a bug in one channel stops nothing else."""
    import apprise
    secret = "sEcReT-t0ken-42"
    broken_url = f"json://user:{secret}@127.0.0.1:9/x"
    real_notify = apprise.Apprise.notify

    def notify(self, *args, **kwargs):
        if any(secret in url for url in self.urls()):
            raise RuntimeError(f"boom posting to {broken_url} as user:{secret}")
        return real_notify(self, *args, **kwargs)
    monkeypatch.setattr(apprise.Apprise, "notify", notify)

    with WebhookReceiver() as hook:
        broken = queue(conn, 1, "down", DOWN, channel="broken")
        fine = queue(conn, 2, "down", DOWN, channel="hook")
        notifier = notifier_for(dsn, {"broken": broken_url, "hook": hook.apprise_url("json")},
                                max_attempts=2, retry_backoff=0.1)
        assert pump(notifier, lambda: _row(conn, broken)[0] == "dead" and _row(conn, fine)[0] == "sent")
        status, attempts, error = _row(conn, broken)
        assert attempts == 2 and error.startswith("RuntimeError: boom posting to json://***"), error
        assert secret.lower() not in error.lower(), error
        assert len(hook.texts()) == 1
        notifier.db.close()
