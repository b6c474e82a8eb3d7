"""The audit log (issue 22, DESIGN.md section 12): every change made with the real `sitewatch`
command is recorded with who made it and its settings before and after, secrets redacted;
`sitewatch audit` lists the rows newest first. The write API's rows: tests/test_api_write.py."""

import json
import socket

from tests.conftest import count

BEARER = "tok-audit-5e1f0a"
PASSWORD = "pw-audit-77c2"
COOKIE = "session-audit-9d3b"
ENV = {"USER": "alice", "SITEWATCH_ALERTS__CHANNELS": json.dumps({"ops": "json://127.0.0.1:9/x"})}


def ok(result):
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def audit_rows(cli) -> list[dict]:
    return json.loads(ok(cli("audit", "--json", env=ENV)))


def test_every_change_from_the_command_line_is_recorded_without_its_secrets(cli, tmp_path):
    ok(cli("url", "add", f"https://bob:{PASSWORD}@a.example/x", "--name", "a", "--bearer", BEARER,
           "--header", f"Cookie: {COOKIE}", "--header", "X-Key: ${API_KEY}", env=ENV))
    ok(cli("url", "update", "a", "--period", "30", env=ENV))
    listing = tmp_path / "monitors.yaml"
    listing.write_text("- https://b.example/\n- url: https://c.example/\n  name: c\n")
    ok(cli("url", "import", str(listing), env=ENV))
    listing.write_text("- https://b.example/\n- url: https://c.example/\n  name: c\n  period: 45\n")
    ok(cli("apply", str(listing), "--dry-run", env=ENV))        # writes nothing: no row
    ok(cli("apply", str(listing), env=ENV))
    ok(cli("apply", str(listing), env=ENV))                     # no changes: no row
    ok(cli("silence", "add", "a", "--for", "1h", "--reason", "deploy", env=ENV))
    ok(cli("silence", "remove", "1", env=ENV))
    cli("notify", "test", env=ENV)                              # the channel refuses: still recorded
    ok(cli("url", "remove", "a", env=ENV))

    rows = audit_rows(cli)
    assert [row["action"] for row in rows] == [
        "url.remove", "notify.test", "silence.remove", "silence.add", "apply", "url.import", "url.import",
        "url.update", "url.add"]
    assert {row["actor"] for row in rows} == {f"cli:alice@{socket.gethostname()}"}
    add, update = rows[-1], rows[-2]
    assert add["target"] == "a" and add["before"] is None
    assert add["after"]["url"] == "https://***@a.example/x" and add["after"]["bearer"] == "***"
    assert sorted(add["after"]["headers"]) == ["Cookie: ***", "X-Key: ***"]
    assert (update["before"], update["after"]) == ({"period": 60}, {"period": 30})
    assert rows[1]["after"] == {"results": {"ops": False}}
    assert rows[3]["after"]["reason"] == "deploy" and rows[3]["after"]["pattern"] == "https://***@a.example/x"
    assert rows[4]["target"] == "+0 ~1 -0" and rows[4]["after"] == {"prune": False, "plan": ["~ c: period 60 -> 45"]}
    # import commits chunk by chunk, unnamed monitors first: a row per transaction
    assert [rows[6]["after"]["monitors"], rows[5]["after"]["monitors"]] == [["https://b.example/"], ["c"]]
    assert rows[5]["after"]["inserted"] == 1
    assert rows[0]["before"]["name"] == "a" and rows[0]["after"] is None
    text = ok(cli("audit", "--json", env=ENV)) + ok(cli("audit", env=ENV))
    for secret in (BEARER, PASSWORD, COOKIE, "${API_KEY}"):
        assert secret not in text


def test_a_refused_change_records_nothing_and_the_listing_is_newest_first(cli, db):
    ok(cli("url", "add", "https://a.example/", env=ENV))
    refused = cli("url", "add", "https://a.example/", env=ENV)
    assert refused.returncode == 2 and "already monitored" in refused.stderr
    assert cli("url", "update", "https://a.example/", "--period", "0", env=ENV).returncode == 2
    assert count(db, "audit") == 1
    for i in range(3):
        ok(cli("url", "add", f"https://n{i}.example/", env=ENV))
    rows = audit_rows(cli)
    assert [row["target"] for row in rows] == [f"https://n{i}.example/" for i in (2, 1, 0)] + ["https://a.example/"]
    assert [row["target"] for row in json.loads(ok(cli("audit", "--json", "--limit", "2", env=ENV)))] == \
        ["https://n2.example/", "https://n1.example/"]
    lines = ok(cli("audit", "--limit", "1", env=ENV)).splitlines()
    assert lines[0].split()[:4] == ["ID", "AT", "(UTC)", "ACTOR"] and "url.add" in lines[1] and len(lines) == 2
    bad = cli("audit", "--limit", "0", env=ENV)
    assert bad.returncode == 2 and "--limit" in bad.stderr
    db.cursor().execute("UPDATE audit SET at = now() - interval '3 hours' WHERE target = 'https://a.example/'")
    assert len(json.loads(ok(cli("audit", "--json", "--since", "2h", env=ENV)))) == 3
    assert len(json.loads(ok(cli("audit", "--json", "--since", "2020-01-01T00:00:00", env=ENV)))) == 4
    bad = cli("audit", "--since", "yesterday", env=ENV)
    assert bad.returncode == 2 and "--since" in bad.stderr


def test_maintenance_windows_and_new_push_tokens_are_recorded(cli):
    ok(cli("url", "add", "https://m.example/", "--name", "m", env=ENV))
    ok(cli("maintenance", "add", "m", "--start", "2031-01-05T02:00", "--duration", "1h", "--every", "week",
           "--tz", "Europe/Berlin", "--reason", "patching", env=ENV))
    window_id = json.loads(ok(cli("maintenance", "list", "--json", env=ENV)))[-1]["id"]
    ok(cli("maintenance", "remove", str(window_id), env=ENV))
    added = ok(cli("url", "add", "push://nightly-audit", env=ENV))
    ok(cli("url", "show-token", "nightly-audit", env=ENV))
    shown = ok(cli("url", "show-token", "nightly-audit", env=ENV))

    rows = audit_rows(cli)
    assert [row["action"] for row in rows[:5]] == [
        "url.show-token", "url.show-token", "url.add", "maintenance.remove", "maintenance.add"]
    assert rows[4]["target"] == rows[3]["target"] == str(window_id)
    assert rows[4]["after"]["pattern"] == "https://m.example/" and rows[4]["after"]["reason"] == "patching"
    assert rows[3]["before"] == {"pattern": "https://m.example/"} and rows[3]["after"] is None
    assert rows[0]["target"] == "nightly-audit" and rows[0]["actor"] == f"cli:alice@{socket.gethostname()}"
    listed = ok(cli("audit", "--json", env=ENV))
    for output in (added, shown):       # the tokens printed once never reach the audit log
        token = output.split("/ping/")[1].split()[0]
        assert token not in listed

