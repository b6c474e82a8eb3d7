"""Monitors with names, request options as stored, `url update`, and bad input, with the real
`sitewatch` command against a real PostgreSQL (DESIGN.md section 12, issue 19)."""

import json

import pytest

from tests.conftest import count
from tests.conftest_web import web_factory as web_factory  # noqa: F401  (fixture)

SECRET = "tok-3f9a1c77e2"


def ok(result):
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result.stdout


def refused(result, *words):
    """Exit 2 with one clear line naming `words`."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sitewatch") and "error: " in lines[0], result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def row(db, where, *args):
    with db.cursor() as cur:
        cur.execute(f"SELECT id, url, name, period, method, headers, body, body_json, bearer, client_cert,"
                    f" client_key, ip_version, next_check_at, extract(epoch FROM next_check_at - now()),"
                    f" regex, timeout FROM url WHERE {where}", args)
        found = cur.fetchone()
    if found is None:
        return None
    names = ["id", "url", "name", "period", "method", "headers", "body", "body_json", "bearer", "client_cert",
             "client_key", "ip_version", "next_check_at", "due_in", "regex", "timeout"]
    found = dict(zip(names, found, strict=True))
    found["body"] = bytes(found["body"]) if found["body"] is not None else None
    return found


def snapshot(db):
    with db.cursor() as cur:
        cur.execute("SELECT * FROM url ORDER BY id")
        return cur.fetchall()


# --- storing the options ---------------------------------------------------------------------------

def test_add_stores_every_request_option_unexpanded(cli, db, tmp_path):
    body_file = tmp_path / "body.bin"
    body_file.write_bytes(b"\x00\x01raw ${TOKEN}")
    out = ok(cli("url", "add", "https://api.example/graphql", "--name", "graph", "--method", "post",
                 "--header", "X-Api-Key: ${API_KEY}", "--header", "Accept:  text/plain ",
                 "--json", '{"query": "{ me { id } }", "token": "${TOKEN}"}', "--bearer", "${TOKEN}",
                 "--client-cert", "/etc/certs/c.pem", "--client-key", "/etc/certs/k.pem",
                 "--ip-version", "6", env={"API_KEY": "x", "TOKEN": "y"}))
    assert "added https://api.example/graphql as 'graph'" in out
    r = row(db, "name = %s", "graph")
    assert r["method"] == "POST"
    assert r["headers"] == ["X-Api-Key: ${API_KEY}", "Accept: text/plain"]
    assert r["body"] == b'{"query": "{ me { id } }", "token": "${TOKEN}"}' and r["body_json"] is True
    assert r["bearer"] == "${TOKEN}"
    assert (r["client_cert"], r["client_key"], r["ip_version"]) == ("/etc/certs/c.pem", "/etc/certs/k.pem", 6)

    ok(cli("url", "add", "https://api.example/upload", "--method", "PUT", "--body", f"@{body_file}",
           "--ip-version", "any", env={"TOKEN": "y"}))
    r = row(db, "url = %s", "https://api.example/upload")
    assert r["body"] == b"\x00\x01raw ${TOKEN}" and r["body_json"] is False
    assert r["ip_version"] is None and r["name"] is None and r["headers"] is None


def test_add_warns_about_an_unset_variable_and_still_adds(cli, db):
    result = cli("url", "add", "https://warn.example/", "--header", "X-Key: ${SET_HERE}",
                 "--bearer", "${NOT_SET_HERE}", env={"SET_HERE": "1"})
    ok(result)
    assert "${NOT_SET_HERE} is not set" in result.stderr
    assert "SET_HERE}" not in result.stderr.replace("${NOT_SET_HERE}", "")
    assert count(db, "url") == 1


def test_import_yaml_takes_the_request_keys_and_names(cli, db, tmp_path):
    path = tmp_path / "urls.yaml"
    path.write_text("""
- url: https://api.example/graphql
  name: users-query
  method: POST
  headers:
    X-Tenant: acme
    Authorization: Bearer ${API_TOKEN}
  json:
    query: "{ users { id } }"
- url: https://api.example/graphql
  name: orders-query
  method: POST
  json: '{"query": "{ orders { id } }"}'
  ip-version: 4
- url: https://login.example/account
  bearer: ${SESSION_TOKEN}
  client-cert: /etc/sitewatch/client.pem
""")
    ok(cli("url", "import", str(path)))
    users = row(db, "name = %s", "users-query")
    assert users["headers"] == ["X-Tenant: acme", "Authorization: Bearer ${API_TOKEN}"]
    assert json.loads(users["body"]) == {"query": "{ users { id } }"} and users["body_json"]
    assert row(db, "name = %s", "orders-query")["ip_version"] == 4
    login = row(db, "url = %s", "https://login.example/account")
    assert login["bearer"] == "${SESSION_TOKEN}" and login["client_cert"] == "/etc/sitewatch/client.pem"

    # Again, changed: named entries are matched by name, the unnamed one by URL.
    path.write_text("""
- url: https://api.example/graphql
  name: users-query
  method: GET
- url: https://login.example/account
  period: 120
""")
    out = ok(cli("url", "import", str(path)))
    assert "0 new, 2 updated" in out
    assert row(db, "name = %s", "users-query")["method"] == "GET"
    assert row(db, "name = %s", "users-query")["headers"] is None
    assert row(db, "url = %s", "https://login.example/account")["period"] == 120
    assert count(db, "url") == 3


# --- names ---------------------------------------------------------------------------------------

def test_one_url_monitored_twice_under_two_names(cli, db):
    ok(cli("url", "add", "https://api.example/graphql", "--name", "users", "--json", '{"q": 1}'))
    ok(cli("url", "add", "https://api.example/graphql", "--name", "orders", "--json", '{"q": 2}'))
    assert count(db, "url") == 2
    listed = json.loads(ok(cli("url", "list", "--json")))
    assert sorted((r["name"], r["body"]) for r in listed) == [("orders", '{"q": 2}'), ("users", '{"q": 1}')]

    # The URL alone matches both: refused by every command on one monitor, with their names.
    for command in (["url", "remove"], ["status"], ["history"], ["url", "update"]):
        extra = ["--period", "30"] if command == ["url", "update"] else []
        refused(cli(*command, "https://api.example/graphql", *extra), "monitored 2 times",
                "'orders'", "'users'")
    assert count(db, "url") == 2

    # A name picks one; silence and incidents, which work on URLs, take the name's URL.
    shown = ok(cli("status", "users")).splitlines()
    assert shown[1].startswith("https://api.example/graphql (users) ") and "(orders)" not in "".join(shown)
    assert [(m["url"], m["name"]) for m in json.loads(ok(cli("status", "--json", "orders")))] \
        == [("https://api.example/graphql", "orders")]
    assert [m["name"] for m in json.loads(ok(cli("status", "--json")))] == ["orders", "users"]
    ok(cli("history", "orders"))
    assert "silence 1: https://api.example/graphql" in ok(cli("silence", "add", "orders", "--for", "1h"))
    ok(cli("incidents", "--url", "orders"))
    refused(cli("silence", "add", "nobody", "--for", "1h"), "no monitor is named 'nobody'")
    out = ok(cli("url", "remove", "users"))
    assert "removed users" in out
    assert row(db, "name = %s", "users") is None and row(db, "name = %s", "orders") is not None
    # The one left is named: the URL now means it.
    ok(cli("url", "update", "https://api.example/graphql", "--period", "30"))
    assert row(db, "name = %s", "orders")["period"] == 30


def test_the_url_is_the_identity_of_its_unnamed_monitor(cli, db):
    ok(cli("url", "add", "https://shared.example/"))
    refused(cli("url", "add", "https://shared.example/"), "already monitored", "--name")
    ok(cli("url", "add", "https://shared.example/", "--name", "second"))
    refused(cli("url", "add", "https://other.example/", "--name", "second"), "already named 'second'")
    ok(cli("url", "remove", "https://shared.example/"))
    assert [r["name"] for r in json.loads(ok(cli("url", "list", "--json")))] == ["second"]


@pytest.mark.parametrize("name, why", [("123", "only digits"), ("a://b", "://"), ("web-*", "'*'"),
                                       ("tab\there", "control character")])
def test_a_name_a_command_would_misread_is_refused(cli, db, name, why):
    refused(cli("url", "add", "https://n.example/", "--name", name), why)
    assert count(db, "url") == 0


# --- url update ----------------------------------------------------------------------------------

def _result(db, url_id, seconds_ago, ok_=True):
    with db.cursor() as cur:
        cur.execute("INSERT INTO task_result (url_id, scheduled_at, started_at, ok, checked_by, status_code)"
                    " VALUES (%s, now() - make_interval(secs => %s), now() - make_interval(secs => %s), %s,"
                    " 'test', 200)", (url_id, seconds_ago, seconds_ago, ok_))


def test_update_changes_in_place_and_keeps_history_state_and_incidents(cli, db):
    ok(cli("url", "add", "https://upd.example/health", "--name", "health", "-p", "60",
           "--header", "X-A: 1", "--header", "X-B: 2", "--bearer", "${OLD}", env={"OLD": "o"}))
    before = row(db, "name = %s", "health")
    for seconds in (300, 240, 180):
        _result(db, before["id"], seconds)
    with db.cursor() as cur:
        cur.execute("UPDATE url_state SET state = 'down', since = now() WHERE url_id = %s", (before["id"],))
        cur.execute("INSERT INTO incident (url_id, url, started_at, failed_checks) VALUES (%s, %s, now(), 3)",
                    (before["id"], before["url"]))
        cur.execute("UPDATE url SET next_check_at = now() + interval '50 s' WHERE id = %s", (before["id"],))

    # Unchanged period: the slot phase stays.
    out = ok(cli("url", "update", "health", "--method", "post", "--header", "X-B: 3", "--no-header", "x-a",
                 "--json", '{"ping": true}', "--bearer", "", "--timeout", "3"))
    assert "updated health" in out and "method" in out and "headers" in out
    after = row(db, "name = %s", "health")
    assert after["id"] == before["id"]
    assert after["method"] == "POST" and after["headers"] == ["X-B: 3"] and after["bearer"] is None
    assert after["body"] == b'{"ping": true}' and after["body_json"] and after["timeout"] == 3.0
    assert 40 < after["due_in"] <= 50
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM task_result WHERE url_id = %s", (before["id"],))
        assert cur.fetchone()[0] == 3
        cur.execute("SELECT state FROM url_state WHERE url_id = %s", (before["id"],))
        assert cur.fetchone()[0] == "down"
        cur.execute("SELECT count(*) FROM incident WHERE url_id = %s AND ended_at IS NULL", (before["id"],))
        assert cur.fetchone()[0] == 1

    # A new period re-slots from now; a new name and URL are the same monitor.
    out = ok(cli("url", "update", "health", "-p", "120", "--name", "health2", "--url", "https://upd.example/v2"))
    assert "re-slotted" in out
    moved = row(db, "id = %s", before["id"])
    assert (moved["name"], moved["url"], moved["period"]) == ("health2", "https://upd.example/v2", 120)
    assert moved["due_in"] <= 1
    assert count(db, "task_result") == 3


def test_update_by_url_of_an_unnamed_monitor(cli, db):
    ok(cli("url", "add", "https://plain.example/"))
    ok(cli("url", "update", "https://plain.example/", "--regex", "ok", "--ip-version", "4"))
    r = row(db, "url = %s", "https://plain.example/")
    assert r["regex"] == "ok" and r["ip_version"] == 4
    ok(cli("url", "update", "https://plain.example/", "--ip-version", "any", "--regex", ""))
    r = row(db, "url = %s", "https://plain.example/")
    assert r["regex"] is None and r["ip_version"] is None


def test_update_adds_and_removes_assert_and_degraded_expressions(cli, db):
    def lists():
        with db.cursor() as cur:
            cur.execute("SELECT assertions, degraded FROM url WHERE name = 'api'")
            return cur.fetchone()
    ok(cli("url", "add", "https://api.example/health", "--name", "api", "--assert", "status == 200"))
    ok(cli("url", "update", "api", "--assert", 'json $.status == "ok"', "--degraded", "response_time < 800"))
    assert lists() == (["status == 200", 'json $.status == "ok"'], ["response_time < 800"])
    ok(cli("url", "update", "api", "--no-assert", "status == 200", "--no-assert", "response_time < 800"))
    assert lists() == (['json $.status == "ok"'], [])
    before = snapshot(db)
    refused(cli("url", "update", "api", "--no-assert", "status == 500"), "no such assert")
    refused(cli("url", "update", "api", "--assert", "status =="), "status ==")
    assert snapshot(db) == before


@pytest.mark.parametrize("args, words", [
    (["--method", "BREW"], ["method must be one of"]),
    (["--header", "no colon here"], ["'Name: value'"]),
    (["--header", f"Authorization Bearer {SECRET}"], ["has no ':'"]),
    (["--header", "Bad Name: x"], ["'Name: value'"]),
    (["--header", "X-A: ${unclosed"], ["not a ${VAR} reference"]),
    (["--header", "Host: other.example"], ["set by sitewatch"]),
    (["--json", "{not json"], ["not valid JSON"]),
    (["--body", "x", "--json", "{}"], ["body or json"]),
    (["--bearer", "${OK}", "--header", "Authorization: Basic x"], ["bearer or an Authorization header"]),
    (["--client-key", "/k.pem"], ["without a client cert"]),
    (["--ip-version", "5"], ["invalid choice"]),
    (["--body", "@/nonexistent/file"], ["cannot read body file"]),
])
def test_bad_request_options_exit_2_with_nothing_written(cli, db, args, words):
    line = refused(cli("url", "add", "https://bad.example/", *args), *words)
    assert SECRET not in line
    assert count(db, "url") == 0


def test_bad_update_exits_2_with_nothing_written(cli, db):
    ok(cli("url", "add", "https://keep.example/", "--name", "keep", "--header", "X-A: 1"))
    ok(cli("url", "add", "https://other.example/", "--name", "other"))
    before = snapshot(db)
    refused(cli("url", "update", "keep"), "nothing to change")
    refused(cli("url", "update", "keep", "--method", "BREW"), "method must be one of")
    refused(cli("url", "update", "keep", "--no-header", "x-missing"), "no such header")
    refused(cli("url", "update", "keep", "--name", "other"), "already named 'other'")
    refused(cli("url", "update", "keep", "-p", "1"), "period must be between")
    refused(cli("url", "update", "nobody", "-p", "30"), "not monitored", "'nobody'")
    refused(cli("url", "update", "https://nobody.example/", "-p", "30"), "not monitored")
    assert snapshot(db) == before


# --- redaction -----------------------------------------------------------------------------------

def test_url_list_never_shows_a_secret(cli, db):
    ok(cli("url", "add", "https://red.example/", "--name", "red", "--bearer", SECRET,
           "--header", f"Cookie: session={SECRET}", "--header", f"Proxy-Authorization: Basic {SECRET}",
           "--header", "X-Key: ${KEY}", "--header", "X-Plain: visible",
           "--json", '{"password": "${PASSWORD}"}', env={"KEY": "k", "PASSWORD": "p"}))
    for args in (["url", "list"], ["url", "list", "--json"], ["status"], ["status", "red"],
                 ["status", "--json"]):
        out = ok(cli(*args))
        assert SECRET not in out and "${KEY}" not in out and "${PASSWORD}" not in out, (args, out)
    listed = json.loads(ok(cli("url", "list", "--json")))[0]
    assert listed["bearer"] == "***"
    assert listed["headers"] == ["Cookie: ***", "Proxy-Authorization: ***", "X-Key: ***", "X-Plain: visible"]
    assert listed["body"] == "***"
    assert "X-Plain: visible" in ok(cli("url", "list"))


# --- the migration -------------------------------------------------------------------------------

def test_migration_0009_keeps_every_url_result_and_incident(cli, db):
    """Undo 0009 by hand on a migrated database, fill it as a version-8 database would be, and
    migrate again: every row stays, and the old rows read as unnamed GET monitors."""
    with db.cursor() as cur:
        cur.execute("DROP INDEX url_url_idx; DROP INDEX url_unnamed_url_key;"
                    " ALTER TABLE url DROP COLUMN name, DROP COLUMN headers, DROP COLUMN body,"
                    " DROP COLUMN body_json, DROP COLUMN bearer, DROP COLUMN client_cert,"
                    " DROP COLUMN client_key, DROP COLUMN ip_version;"
                    " ALTER TABLE url ADD CONSTRAINT url_url_key UNIQUE (url);"
                    # and the later ones: 0011_push.sql
                    " ALTER TABLE url DROP COLUMN grace, DROP COLUMN push_token_hash, DROP COLUMN push_slot,"
                    " DROP COLUMN push_started_at; ALTER TABLE task_result DROP COLUMN message;"
                    # 0012_push_cron.sql
                    " ALTER TABLE url DROP COLUMN cron, DROP COLUMN tz;"
                    # 0013_regions.py (task_result keeps its region and new key: the swap adopts them)
                    " ALTER TABLE url DROP COLUMN regions, DROP COLUMN down_when; DROP TABLE url_region_state;"
                    " DROP FUNCTION alert_apply_region_results; DROP FUNCTION alert_down_needed;"
                    " DROP TYPE alert_region_result; DROP TABLE region_host, region_absence;"
                    " DROP FUNCTION alert_region_absent;"
                    " ALTER TABLE incident DROP COLUMN first_region, DROP COLUMN regions;"
                    " ALTER TABLE task DROP COLUMN region;"
                    " ALTER TABLE task ADD CONSTRAINT task_url_id_key UNIQUE (url_id);"
                    " CREATE INDEX task_available_at_idx ON task (available_at);"
                    # 0019_region_day.sql
                    " DROP TABLE rollup_region_day;"
                    # 0018_alert_steady.sql
                    " DROP FUNCTION alert_apply_results(alert_result[], integer, integer, text[], boolean);"
                    " ALTER FUNCTION alert_apply_changes(alert_result[], integer, integer, text[], boolean)"
                    " RENAME TO alert_apply_results;"
                    # 0017_region_uptime.sql
                    " DROP TABLE rollup_region_hour; DROP FUNCTION history_slot_failed;"
                    # 0016_region_confirm.sql (its column went with url_region_state)
                    " DROP FUNCTION alert_confirm_regions;"
                    # 0015_audit.sql
                    " DROP TABLE audit;"
                    # 0014_maintenance.sql
                    " DROP TABLE maintenance; ALTER TABLE silence DROP COLUMN maintenance_id;"
                    " DROP FUNCTION maintenance_ranges, outside_maintenance, maintenance_now;"
                    " DELETE FROM schema_version WHERE version >= 9")
        cur.execute("INSERT INTO url (url, period, timeout, method, next_check_at) VALUES"
                    " ('https://a.example/', 60, 10, 'GET', now()), ('https://b.example/', 30, 5, 'HEAD', now())"
                    " RETURNING id")
        ids = [row[0] for row in cur.fetchall()]
    for url_id in ids:
        _result(db, url_id, 120)
    with db.cursor() as cur:
        cur.execute("INSERT INTO incident (url_id, url, started_at, failed_checks) VALUES (%s, 'https://a.example/',"
                    " now(), 3)", (ids[0],))
        cur.execute("SELECT * FROM task_result ORDER BY url_id, scheduled_at")
        results = cur.fetchall()

    assert "0009_requests.sql" in ok(cli("db", "migrate"))
    with db.cursor() as cur:
        cur.execute("SELECT id, url, name, method, headers, body, body_json, bearer, ip_version FROM url ORDER BY id")
        assert cur.fetchall() == [(ids[0], "https://a.example/", None, "GET", None, None, False, None, None),
                                  (ids[1], "https://b.example/", None, "HEAD", None, None, False, None, None)]
        cur.execute("SELECT * FROM task_result ORDER BY url_id, scheduled_at")
        # every column as it was (0011 adds `message` at the end, null)
        assert [row[:len(results[0])] for row in cur.fetchall()] == results
        cur.execute("SELECT url_id FROM incident")
        assert cur.fetchall() == [(ids[0],)]
    # The old URLs work as before under the new rules.
    refused(cli("url", "add", "https://a.example/"), "already monitored")
    ok(cli("url", "add", "https://a.example/", "--name", "a-again"))
    assert "removed https://b.example/" in ok(cli("url", "remove", "https://b.example/"))


def test_web_pages_list_every_monitor_of_a_shared_url(cli, dsn, web_factory):
    """Keyset paging continues by URL, then id: a page boundary between two monitors of one URL
    skips neither."""
    for args in (["https://same.example/", "--name", "one"], ["https://same.example/", "--name", "two"],
                 ["https://same.example/"], ["https://zzz.example/"]):
        ok(cli("url", "add", *args))
    web = web_factory(dsn)
    seen, after = [], None
    for _ in range(6):
        body = web.get("/api/v1/urls", params={"limit": 1, **({"after": after} if after else {})}).json()
        seen += [(item["url"], item["name"]) for item in body["items"]]
        after = body["next_after"]
        if after is None:
            break
    assert seen == [("https://same.example/", "one"), ("https://same.example/", "two"),   # by URL, then id
                    ("https://same.example/", None), ("https://zzz.example/", None)]
    assert "one" in web.get("/").text
