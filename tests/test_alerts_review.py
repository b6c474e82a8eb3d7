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
        return store.remove_url(c, store.find_monitor(c, url)[0], ["ops", "mail"])
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


# --- B9: timestamps as PostgreSQL writes them into jsonb; a notice that cannot be rendered


PG_TIMES = [("2026-12-06 12:00:00.12345+00", "UTC"), ("2026-12-06 12:00:00.1+00", "UTC"),
            ("2026-12-06 12:00:00+00", "UTC"), ("2026-12-06 12:00:00.123456+00", "UTC"),
            ("2026-12-06 12:00:00.5+00", "Asia/Kolkata"), ("2026-12-06 12:00:00.25+00", "America/St_Johns"),
            ("2026-12-06 12:00:00.75+00", "America/Sao_Paulo"), ("1890-06-01 12:00:00.5+00", "Europe/Amsterdam")]


def _jsonb_times(conn):  # noqa: F811
    """Each timestamp as jsonb text, written in its session TimeZone, with the exact value."""
    out = []
    for value, zone in PG_TIMES:
        q(conn, "SELECT set_config('TimeZone', %s, false)", (zone,))
        out.append(q(conn, "SELECT jsonb_build_object('t', %s::timestamptz)->>'t', %s::timestamptz",
                     (value, value))[0])
    q(conn, "RESET TimeZone")
    return out


def test_jsonb_timestamps_parse_whatever_digits_and_offset_postgresql_wrote(conn):  # noqa: F811
    from sitewatch.alerts.messages import _when, parse_time
    times = _jsonb_times(conn)
    assert any(len(text.split(".")[-1]) < 12 for text, _ in times), "some fractions are trimmed"
    for text, exact in times:
        assert parse_time(text) == exact, text
    assert _when(times[0][0]) == "2026-12-06 12:00:00 UTC"


def test_jsonb_timestamps_parse_on_the_oldest_supported_python(conn, tmp_path):  # noqa: F811
    """Python 3.10's fromisoformat refuses `12:00:00.12345+00:00` (the notifier crash-looped)."""
    import glob
    import os
    import shutil
    import subprocess
    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.10*/bin/python3.10")))
    candidates += [shutil.which("python3.10") or "python3.10"]
    python = next((c for c in candidates if subprocess.run(
        [c, "-c", "import sys; assert sys.version_info[:2] == (3, 10)"], capture_output=True).returncode == 0), None)
    if python is None:
        import pytest
        pytest.skip("no Python 3.10 here")
    times = _jsonb_times(conn)
    script = ("import json, sys\nfrom sitewatch.alerts.messages import _when\n"
              "print(json.dumps([_when(t) for t in json.load(sys.stdin)]))")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([python, "-c", script], input=__import__("json").dumps([t for t, _ in times]),
                          capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": root}, timeout=60)
    assert done.returncode == 0, done.stderr
    import datetime
    expected = [exact.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") for _, exact in times]
    assert __import__("json").loads(done.stdout) == expected


class Ctx:
    """What the notifier needs from its process, for driving it step by step in a test."""
    role = "notifier"
    stats_interval = 5.0

    def __init__(self, dsn, channels: dict, **alerts):
        import json

        from sitewatch import config
        env = {"SITEWATCH_ALERTS__CHANNELS": json.dumps(channels), "DB_DSN": dsn}
        env.update({f"SITEWATCH_ALERTS__{k.upper()}": str(v) for k, v in alerts.items()})
        self.cfg, self.dsn = config.load(env=env), dsn

    def wake(self):
        pass

    def heartbeat(self):
        pass

    def send_stats(self, stats):
        pass


def notifier_for(dsn, channels, **alerts):
    from sitewatch.alerts.notifier import Notifier
    return Notifier(Ctx(dsn, channels, **alerts))


def pump(notifier, done, seconds=60.0):
    """Run the notifier's send loop (finish, claim) until done() or the deadline; done()'s value."""
    import time
    deadline = time.monotonic() + seconds
    while True:
        live = notifier.db.get()
        notifier.finish_sends(live)
        notifier.claim(live)
        if done() or time.monotonic() > deadline:
            return done()
        time.sleep(0.05)


def queue(conn, url_id, kind, detail, channel="hook", key=None):  # noqa: F811
    import json
    return q(conn, "INSERT INTO alert_outbox (key, channel, url_id, kind, detail) VALUES (%s, %s, %s, %s, %s)"
                   " RETURNING id", (key or f"test:{url_id}:{kind}:{channel}", channel, url_id, kind,
                                     json.dumps(detail)))[0][0]


def test_a_notice_that_cannot_be_rendered_fails_alone(dsn, conn):  # noqa: F811
    from tests.alert_receivers import WebhookReceiver
    with WebhookReceiver() as hook:
        good = [queue(conn, i, "down", {"url": f"http://{i}.example/", "since": "2026-12-06T12:00:00.12345+00:00",
                                         "error_kind": "status", "error": "HTTP 503"}) for i in range(1, 4)]
        bad = queue(conn, 9, "up", {"url": "http://bad.example/", "down_seconds": "not a number"})
        notifier = notifier_for(dsn, {"hook": hook.apprise_url("json")}, max_attempts=3, retry_backoff=60)
        assert pump(notifier, lambda: q(conn, "SELECT count(*) FROM alert_outbox WHERE status = 'sent'") == [(3,)])
        sent = q(conn, "SELECT id, status, attempts FROM alert_outbox WHERE status = 'sent' ORDER BY id")
        assert sent == [(i, "sent", 1) for i in good]
        status, attempts, error = q(conn, "SELECT status, attempts, last_error FROM alert_outbox WHERE id = %s",
                                    (bad,))[0]
        assert (status, attempts) == ("pending", 1) and "cannot render" in error
        assert all("2026-12-06 12:00:00 UTC" in t for t in hook.texts())
        notifier.db.close()


# --- B12: a URL's notices reach a channel in order


def claim(conn, rooms=None, other_room=50):  # noqa: F811
    return alerts_store.claim_outbox(conn, "me:notifier:1", rooms or {"hook": 50, "chat": 50}, other_room, 30, 6)


def test_a_notice_waits_while_an_older_one_for_its_url_and_channel_is_pending(conn):  # noqa: F811
    down = queue(conn, 1, "down", {}, key="incident:1:down")
    q(conn, "UPDATE alert_outbox SET attempts = 1, available_at = now() + interval '1 hour' WHERE id = %s", (down,))
    up = queue(conn, 1, "up", {}, key="incident:1:up")
    other_channel = queue(conn, 1, "up", {}, channel="chat", key="incident:1:up")
    other_url = queue(conn, 2, "down", {}, key="incident:2:down")
    claimed = {r["id"] for r in claim(conn)}
    assert claimed == {other_channel, other_url}, "the UP waits for the DOWN being retried"
    q(conn, "UPDATE alert_outbox SET available_at = now() WHERE id = %s", (down,))
    assert [r["id"] for r in claim(conn)] == [down]
    q(conn, "UPDATE alert_outbox SET status = 'dead' WHERE id = %s", (down,))
    assert [r["id"] for r in claim(conn)] == [up]


def test_a_down_being_retried_reaches_the_channel_before_the_up_after_it(dsn, conn):  # noqa: F811
    from tests.alert_receivers import WebhookReceiver
    with WebhookReceiver() as hook:
        hook.fail_next = 1
        queue(conn, 1, "down", {"url": "http://a.example/", "error_kind": "status", "error": "HTTP 503"},
              key="incident:1:down")
        notifier = notifier_for(dsn, {"hook": hook.apprise_url("json")}, retry_backoff=0.3)
        assert pump(notifier, lambda: len(hook.requests) == 1)
        queue(conn, 1, "up", {"url": "http://a.example/", "down_seconds": 60}, key="incident:1:up")
        assert pump(notifier, lambda: q(conn, "SELECT count(*) FROM alert_outbox WHERE status = 'sent'") == [(2,)])
        assert [m["body"]["title"].split(":")[0] for m in hook.messages()] == ["DOWN", "UP"]
        notifier.db.close()


# --- B10: a hanging channel delays no other channel


def test_each_channel_is_claimed_within_its_own_budget(conn):  # noqa: F811
    hang = [queue(conn, i, "down", {}, channel="hang") for i in range(1, 6)]
    fast = [queue(conn, i, "down", {}, channel="fast") for i in range(1, 4)]
    stray = [queue(conn, i, "down", {}, channel="gone") for i in range(1, 3)]
    got = [r["id"] for r in claim(conn, {"hang": 2, "fast": 50}, 1)]
    assert sorted(got) == sorted(hang[:2] + fast + stray[:1])
    assert claim(conn, {"hang": 0, "fast": 0}, 0) == []


def _hanging_receiver():
    """A receiver that takes every connection at once (a listen backlog of 5 makes connects
    time out, and the sends fail instead of hanging), then never answers. Send to it with
    `?rto=600`: Apprise's own read timeout (4 s) would end each send quickly."""
    import threading

    from tests import alert_receivers

    class Server(alert_receivers._Server):
        request_queue_size = 512

    class Receiver(alert_receivers.WebhookReceiver):
        def start(self):
            self._server = Server(("127.0.0.1", self.port), alert_receivers._Handler)
            self._server.receiver = self
            self.port = self._server.server_address[1]
            threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    receiver = Receiver()
    receiver.hang = True
    return receiver


def test_a_hanging_channel_delays_no_other_channel(dsn, conn):  # noqa: F811
    from sitewatch.alerts.notifier import MAX_IN_FLIGHT
    from tests.alert_receivers import WebhookReceiver
    with _hanging_receiver() as slow, WebhookReceiver() as fast:
        n = MAX_IN_FLIGHT + 10
        for i in range(1, n + 1):                 # the hanging channel's notices are due first
            queue(conn, i, "down", {"url": f"http://{i}.example/"}, channel="slow")
        for i in range(1, n + 1):
            queue(conn, i, "down", {"url": f"http://{i}.example/"}, channel="fast")
        notifier = notifier_for(dsn, {"slow": slow.apprise_url("json") + "?rto=600", "fast": fast.apprise_url("json")},
                                send_timeout=600)
        done = pump(notifier, lambda: q(conn, "SELECT count(*) FROM alert_outbox WHERE channel = 'fast'"
                                              " AND status = 'sent'") == [(n,)], seconds=30)
        in_flight = [row["channel"] for row, _, _ in notifier.in_flight.values()]
        assert done, f"fast sent: {len(fast.messages())} of {n}; in flight: {len(in_flight)}"
        assert in_flight == ["slow"] * MAX_IN_FLIGHT and len(slow.requests) <= MAX_IN_FLIGHT
        notifier.db.close()


def test_a_send_is_not_queued_behind_hanging_sends_to_another_channel():
    """Apprise 2.3 runs sends with a service_timeout on one shared pool of min(32, CPUs + 4)
    threads: with that many sends hanging, no other channel's send even starts."""
    from sitewatch.alerts.channels import Channels
    from tests.alert_receivers import WebhookReceiver
    with _hanging_receiver() as slow, WebhookReceiver() as fast:
        channels = Channels({"slow": slow.apprise_url("json") + "?rto=600", "fast": fast.apprise_url("json")})
        for _ in range(20):
            channels.start("slow", "t", "b")
        import time
        deadline = time.monotonic() + 30
        while len(slow.requests) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(slow.requests) == 20, "twenty sends hang in the receiver"
        assert channels.send("fast", "t", "b", timeout=30) == (True, None)


# --- A3: a monitored site's bytes in notices are text, never markup


HOSTILE = ("HTTP 302 Found to <!channel> @channel <https://evil.example/login|Click here to restore service> "
           "[Click](https://evil.example/) <a href=\"https://evil.example/\">x</a><img src=https://evil.example/p.png>"
           " `tick` \x1b[31mred")


def _mail_parts(smtp) -> dict:
    import email
    parts = {}
    for mail in smtp.messages():
        for part in email.message_from_string(mail["data"]).walk():
            if not part.is_multipart():
                parts[part.get_content_type()] = part.get_payload(decode=True).decode("utf-8", "replace")
    return parts


def test_a_sites_text_reaches_no_channel_as_markup(dsn, conn):  # noqa: F811
    from tests.alert_receivers import SmtpReceiver, WebhookReceiver
    with WebhookReceiver() as hook, WebhookReceiver() as chat, SmtpReceiver() as smtp:
        detail = {"url": "https://shop.example/", "since": "2026-12-06T12:00:00+00:00", "error_kind": "redirect",
                  "error": HOSTILE}
        for channel in ("hook", "chat", "mail"):
            queue(conn, 1, "down", detail, channel=channel, key="incident:1:down")
        notifier = notifier_for(dsn, {"hook": hook.apprise_url("json"), "chat": chat.apprise_url("mmost", "tok"),
                                      "mail": smtp.apprise_url()})
        assert pump(notifier, lambda: q(conn, "SELECT count(*) FROM alert_outbox WHERE status = 'sent'") == [(3,)])
        notifier.db.close()
        (plain,), (markdown,) = hook.texts(), chat.texts()
        for text in (plain, markdown):
            assert "\x1b" not in text and "@channel" not in text and "@\u2060channel" in text
        # Mattermost renders Markdown: the site's text is one code span, so no link, no mention
        import re
        span = re.search(r"redirect: (`+)(.+?)\1\.", markdown)
        assert span and "Click here to restore service" in span.group(2) and "<img" in span.group(2), markdown
        assert "`https://shop.example/`" in markdown
        assert "Click here to restore service" in plain and "`" not in plain.replace("`tick`", "")
        parts = _mail_parts(smtp)          # plain text only, or HTML with the site's text escaped
        html = parts.get("text/html", "")
        assert "<img" not in html and "<a href" not in html, html
        assert "Click here to restore service" in (parts.get("text/plain") or html), parts


def test_slack_gets_the_sites_text_as_code_with_its_link_and_mention_syntax_escaped():
    from apprise.plugins.slack import NotifySlack

    from sitewatch.alerts.messages import render
    _, body, _ = render("down", {"url": "https://shop.example/", "error_kind": "redirect", "error": HOSTILE},
                        "incident:1:down", markdown=True)
    slack = NotifySlack._commonmark_to_slack(body)
    assert "<!channel>" not in slack and "<https://evil" not in slack and "&lt;!channel&gt;" in slack, slack


# --- B8: a failure is judged by connectivity during its own check


def test_a_check_that_began_in_an_outage_counts_toward_nothing_when_written_after_it(conn):  # noqa: F811
    import datetime
    import time
    url = add_url(conn, failure_threshold=2)
    owner = "h:consumer-1:1"

    def write(at):
        task = q(conn, "INSERT INTO task (url_id, scheduled_at, available_at, status, attempts, lease_owner)"
                       " VALUES (%s, %s, now(), 1, 1, %s) RETURNING id", (url, at, owner))[0][0]
        result = (task, 1, owner, at, None, None, None, False, "timeout", "timed out", None)
        assert store.complete_tasks(conn, [result], DEFAULTS) == []

    def after(moment):
        deadline = time.monotonic() + 30
        while q(conn, "SELECT now() <= %s", (moment,))[0][0] and time.monotonic() < deadline:
            time.sleep(0.05)

    alerts_store.record_connectivity(conn, "h", True)
    (good,) = q(conn, "SELECT checked_at FROM alert_host")[0]
    write(good - datetime.timedelta(seconds=30))            # a failure before the outage: counts
    assert state(conn, url)[1] == 1
    after(good)
    alerts_store.record_connectivity(conn, "h", False)      # the outage: from the last good check
    during = [good + datetime.timedelta(milliseconds=k) for k in (1, 2, 3, 4)]
    for at in during[:3]:
        write(at)                                           # written while offline: nothing
    assert state(conn, url)[1] == 1
    after(during[3])
    alerts_store.record_connectivity(conn, "h", True)       # back; during[3]'s check timed out meanwhile
    write(during[3])
    assert q(conn, "SELECT count(*) FROM incident") == [(0,)] and outbox(conn) == []
    assert state(conn, url)[:2] == ("unknown", 1)
    assert q(conn, "SELECT count(*) FROM alert_host_outage") == [(1,)]


# --- B11: two certificates behind one URL


def test_two_certificates_behind_one_url_each_warn_once_per_threshold(conn):  # noqa: F811
    import datetime
    url = add_url(conn, "https://two.example/")
    start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=60)

    def seen(at, days):
        q(conn, "INSERT INTO alert_outbox (key, channel, url_id, incident_id, kind, detail)"
                " SELECT * FROM alert_apply_results(%s::alert_result[], 3, 2, '{ops}')"
                " ON CONFLICT (key, channel) DO NOTHING",
          ([(url, at, True, None, None, days, "h:consumer-1:1", False)],))

    for i in range(10):                       # DNS round robin: 80 and 5 days left, in turn
        seen(start + datetime.timedelta(hours=i), 80 if i % 2 == 0 else 5)
    assert [key for _, _, key in outbox(conn)] == [f"cert:{url}:0:7"]
    seen(start + datetime.timedelta(days=4), 1)           # the stale one, a day before it expires
    seen(start + datetime.timedelta(days=4, hours=1), 76)
    seen(start + datetime.timedelta(days=50), 30)         # the other one, 30 days before its end
    seen(start + datetime.timedelta(days=50, hours=1), 30)
    seen(start + datetime.timedelta(days=51), 90)         # renewed: a third one, quiet until 30
    seen(start + datetime.timedelta(days=112), 29)
    assert [key for _, _, key in outbox(conn)] == [f"cert:{url}:0:7", f"cert:{url}:0:1", f"cert:{url}:1:30",
                                                   f"cert:{url}:2:30"]
    known = q(conn, "SELECT jsonb_array_length(cert_known) FROM url_state WHERE url_id = %s", (url,))[0][0]
    assert known <= 8


def test_schema_6_remembers_the_certificate_each_url_was_warned_about(empty_dsn):
    """A version-5 database with a certificate already warned at 14 days: after the migration, the
    same certificate is not warned at 14 again, and its 7-day notice keeps its sequence number."""
    import datetime

    from sitewatch.db import schema
    c = psycopg2.connect(empty_dsn)
    try:
        with c, c.cursor() as cur:
            cur.execute("CREATE TABLE schema_version (version integer PRIMARY KEY, name text NOT NULL,"
                        " applied_at timestamptz NOT NULL DEFAULT now())")
        for number, name, sql in schema.migrations():
            if number > 5:
                break
            if sql is None:
                schema._run_python_migration(c, number, name)
            else:
                with c, c.cursor() as cur:
                    cur.execute(sql)
                    schema.record_version(cur, number, name)
        with c, c.cursor() as cur:
            cur.execute("INSERT INTO url (url, period, timeout, next_check_at)"
                        " VALUES ('https://c.example/', 60, 5, now()) RETURNING id")
            (url,) = cur.fetchone()
            cur.execute("UPDATE url_state SET cert_days_left = 10, cert_seq = 0, cert_notified = 14,"
                        " updated_at = now()")
        assert schema.migrate(c) == [name for number, name, _ in schema.migrations() if number > 5]
        c.autocommit = True
        now = q(c, "SELECT now()")[0][0]
        for at, days in ((now + datetime.timedelta(minutes=1), 10), (now + datetime.timedelta(days=4), 6)):
            q(c, "INSERT INTO alert_outbox (key, channel, url_id, incident_id, kind, detail)"
                 " SELECT * FROM alert_apply_results(%s::alert_result[], 3, 2, '{ops}')",
              ([(url, at, True, None, None, days, "h:consumer-1:1", False)],))
        assert q(c, "SELECT key FROM alert_outbox") == [(f"cert:{url}:0:7",)]
        assert q(c, "SELECT cert_seq FROM url_state") == [(1,)]
    finally:
        c.close()


def test_removing_a_url_while_its_result_is_being_recorded_does_not_deadlock(dsn, conn):  # noqa: F811
    """The result path locks the task (deleting it), then url_state: remove takes them in the
    same order, so it waits for the batch instead of deadlocking with it."""
    import threading
    import time
    url = add_url(conn, failure_threshold=1)
    (task,) = q(conn, "INSERT INTO task (url_id, scheduled_at, available_at) VALUES (%s, now(), now()) RETURNING id",
                (url,))[0]
    consumer = psycopg2.connect(dsn)
    outcome = {}

    def remove():
        try:
            outcome["closed"] = _remove(dsn, "http://a.example/")
        except Exception as e:  # noqa: BLE001 - reported below
            outcome["error"] = e
    try:
        with consumer.cursor() as cur:
            cur.execute("DELETE FROM task WHERE id = %s", (task,))           # the batch, half-way
            remover = threading.Thread(target=remove)
            remover.start()
            deadline = time.monotonic() + 30
            while not q(conn, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                              " AND datname = current_database() AND query LIKE '%%FROM url%%'")[0][0] \
                    and time.monotonic() < deadline:
                time.sleep(0.05)
            cur.execute("SELECT 1 FROM url_state WHERE url_id = %s FOR UPDATE", (url,))   # and on
        consumer.commit()
        remover.join(30)
    finally:
        consumer.close()
    assert outcome == {"closed": 0}, outcome
