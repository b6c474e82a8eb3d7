"""The alerts commands through the real `sitewatch` CLI: incidents, silence, notify test, the
url add/import overrides, and the alerts.* configuration (secrets never shown, bad values
exit 2 with one line)."""

import json

from tests.alert_receivers import WebhookReceiver, refused_port

SECRET = "XXsecretTOKEN42XX"


def channels_env(channels: dict) -> dict:
    return {"SITEWATCH_ALERTS__CHANNELS": json.dumps(channels)}


def one_line_error(done, code=2) -> str:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def q(db, sql, params=None):
    with db.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def test_config_show_never_shows_a_channel_secret(cli):
    env = channels_env({"ops": f"slack://T0/B0/{SECRET}", "hook": f"json://user:{SECRET}@127.0.0.1:9/x"})
    done = cli("config", "show", env=env)
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout + done.stderr
    assert "alerts.channels = {ops: slack://***, hook: json://***}" in done.stdout


def test_a_bad_channel_url_or_threshold_exits_2_with_one_line_and_no_secret(cli, db):
    line = one_line_error(cli("url", "list", env=channels_env({"ops": f"nosuchscheme://{SECRET}/x"})))
    assert "alerts.channels" in line and "'ops'" in line and SECRET not in line
    line = one_line_error(cli("url", "list", env={"SITEWATCH_ALERTS__SUCCESS_THRESHOLD": "0"}))
    assert "alerts.success_threshold" in line
    line = one_line_error(cli("url", "list", env={"SITEWATCH_ALERTS__REPEAT_INTERVAL": "soon"}))
    assert "alerts.repeat_interval" in line
    line = one_line_error(cli("url", "list", env={**channels_env({"a": "json://127.0.0.1:9/x"}),
                                                  "SITEWATCH_ALERTS__DEFAULT_CHANNELS": "[b]"}))
    assert "alerts.default_channels" in line and "'b'" in line


def test_url_overrides_are_validated_and_stored(cli, db):
    env = channels_env({"ops": "json://127.0.0.1:9/x", "mail": "json://127.0.0.1:9/y"})
    line = one_line_error(cli("url", "add", "http://a.example/", "--notify", "pager", env=env))
    assert "'pager'" in line
    one_line_error(cli("url", "add", "http://a.example/", "--failure-threshold", "0", env=env))
    one_line_error(cli("url", "add", "http://a.example/", "--success-threshold", "x", env=env))
    assert q(db, "SELECT count(*) FROM url") == [(0,)], "nothing written on bad input"
    done = cli("url", "add", "http://a.example/", "--failure-threshold", "5", "--success-threshold", "1",
               "--notify", "ops,mail", env=env)
    assert done.returncode == 0, done.stderr
    imported = cli("url", "import", "-", env=env, input=(
        "- url: http://b.example/\n  failure-threshold: 2\n  notify: [mail]\n"
        "- url: http://c.example/\n"))
    assert imported.returncode == 0, imported.stderr
    assert q(db, "SELECT url, failure_threshold, success_threshold, notify FROM url ORDER BY url") == [
        ("http://a.example/", 5, 1, ["ops", "mail"]), ("http://b.example/", 2, None, ["mail"]),
        ("http://c.example/", None, None, None)]
    assert q(db, "SELECT count(*) FROM url_state") == [(3,)], "every URL gets its state row"
    bad = cli("url", "import", "-", env=env, input="- url: http://d.example/\n  notify: [nope]\n")
    one_line_error(bad)


def test_silences_add_list_remove(cli, db):
    for bad in (["silence", "add", "http://a.example/", "--for", "2 weeks"],
                ["silence", "add", "http://a.example/", "--for", "0s"],
                ["silence", "add", "ftp://a.example/", "--for", "1h"],
                ["silence", "remove", "x"]):
        one_line_error(cli(*bad))
    assert q(db, "SELECT count(*) FROM silence") == [(0,)]
    done = cli("silence", "add", "https://*.example.com/*", "--for", "2h", "--reason", "maintenance")
    assert done.returncode == 0, done.stderr
    done = cli("silence", "add", "http://user:pw@a.example/?token=t", "--for", "90s")
    assert done.returncode == 0 and "pw" not in done.stdout
    listed = json.loads(cli("silence", "list", "--json").stdout)
    assert [(s["pattern"], s["active"], s["reason"]) for s in listed] == [
        ("https://*.example.com/*", True, "maintenance"), ("http://***@a.example/?***", True, None)]
    sid = listed[0]["id"]
    assert cli("silence", "remove", str(sid)).returncode == 0
    listed = {s["id"]: s["active"] for s in json.loads(cli("silence", "list", "--json").stdout)}
    assert listed[sid] is False
    one_line_error(cli("silence", "remove", "999"))


def test_incidents_json_lists_incidents_and_their_dead_notices(cli, db):
    q(db, "INSERT INTO incident (url_id, url, started_at, ended_at, first_error_kind, first_error, last_error_kind,"
          " last_error, failed_checks) VALUES (1, 'http://u:pw@a.example/', '2026-01-01', '2026-01-01 00:05',"
          " 'dns', 'no such host', 'connect', 'refused', 5), (2, 'http://b.example/', '2026-01-02', NULL,"
          " 'status', 'HTTP 503', 'status', 'HTTP 503', 3) RETURNING id")
    q(db, "INSERT INTO alert_outbox (key, channel, url_id, incident_id, kind, detail, status, attempts, last_error)"
          " VALUES ('incident:2:down', 'ops', 2, 2, 'down', '{\"url\": \"http://b.example/\"}', 'dead', 6,"
          " 'HTTP 500') RETURNING id")
    rows = json.loads(cli("incidents", "--json").stdout)
    assert [r["url"] for r in rows] == ["http://b.example/", "http://***@a.example/"]
    assert set(rows[0]) >= {"url", "started_at", "ended_at", "first_error_kind", "first_error", "last_error_kind",
                            "last_error", "failed_checks"}
    assert rows[0]["ended_at"] is None and rows[1]["failed_checks"] == 5
    assert rows[0]["dead_notifications"] == [{"kind": "down", "channel": "ops", "key": "incident:2:down",
                                              "attempts": 6, "last_error": "HTTP 500"}]
    assert len(json.loads(cli("incidents", "--open", "--json").stdout)) == 1
    assert len(json.loads(cli("incidents", "--url", "http://b.example", "--json").stdout)) == 1
    text = cli("incidents").stdout
    assert "Dead notices (not delivered after alerts.max_attempts): 1" in text and "HTTP 500" in text


def test_notify_test_reports_each_channel_and_exits_1_if_any_failed(cli):
    with WebhookReceiver() as hook:
        env = channels_env({"good": hook.apprise_url("json"),
                            "dead": f"json://127.0.0.1:{refused_port()}/{SECRET}"})
        done = cli("notify", "test", env=env)
        assert done.returncode == 1, done.stderr
        lines = sorted(done.stdout.splitlines())
        assert lines[0].startswith("dead: FAILED") and lines[1] == "good: ok"
        assert SECRET not in done.stdout + done.stderr
        assert cli("notify", "test", "good", env=env).returncode == 0
        one_line_error(cli("notify", "test", "nosuch", env=env))
        assert len(hook.messages()) == 2


def test_repeat_interval_takes_a_duration_or_a_number_of_seconds(cli, tmp_path):
    for value, shown in (("0", "0"), ("90", "90"), ('"2h"', "2h")):
        path = tmp_path / "sw.yaml"
        path.write_text(f"alerts:\n  repeat_interval: {value}\n")
        done = cli("--config", str(path), "config", "show")
        assert done.returncode == 0, done.stderr
        assert f"alerts.repeat_interval = {shown}    (file" in done.stdout
    path.write_text("alerts:\n  repeat_interval: [1]\n")
    one_line_error(cli("--config", str(path), "config", "show"))
