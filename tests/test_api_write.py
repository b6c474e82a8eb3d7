"""The write API (issue 22, DESIGN.md section 12) on the real `sitewatch web` with web.tokens, a
real PostgreSQL and the real command line: create, change and delete monitors and silences,
apply a file, and every refusal (400 naming the field, 401, 403, 404, 409, 415, 429), with the
changes seen by `sitewatch url list` and recorded in `sitewatch audit`, secrets redacted."""

import json

import httpx
import psycopg2
import pytest

from tests.conftest import _fresh_database, cli_for, count
from tests.conftest_web import WebServer

# `sitewatch` is test_run's fixture (each test's `sitewatch run` processes, killed at teardown).
from tests.test_run import sitewatch  # noqa: F401

WRITE = "write-token-0f9e8d7c6b5a"
READ = "read-token-1a2b3c4d5e6f"
BROWSER = "page-token-77aa88bb99cc"         # a web.auth entry: reads only
TOKENS = json.dumps({"ci": {"token": "${SW_TEST_CI_TOKEN}", "scope": "write"},
                     "grafana": {"token": READ, "scope": "read"}})
SECRET_BEARER = "monitor-bearer-5d4c3b2a"
SECRET_PASSWORD = "userinfo-pw-6e5d4c"


@pytest.fixture(scope="module")
def server(pg_base_dsn, template_db, tmp_path_factory):
    """One server for the module: writes with `ci`, reads with web.auth or either token."""
    tmp_path = tmp_path_factory.mktemp("api")
    for dsn in _fresh_database(pg_base_dsn, "sitewatch_api", template_db):
        web = WebServer(tmp_path, dsn, {"SITEWATCH_WEB__TOKENS": TOKENS, "SW_TEST_CI_TOKEN": WRITE,
                                        "SITEWATCH_WEB__AUTH": f"token:{BROWSER}"})
        web.dsn, web.cli = dsn, cli_for(tmp_path, dsn)
        yield web
        web.stop()


def send(server, method, path, body=None, token=WRITE, kind="application/json", **kwargs):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if body is not None:
        headers["Content-Type"] = kind
        kwargs["content"] = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return server.client.request(method, path, headers={**headers, **kwargs.pop("headers", {})}, **kwargs)


def listed(server) -> dict:
    result = server.cli("url", "list", "--json")
    assert result.returncode == 0, result.stderr
    return {item["name"] or item["url"]: item for item in json.loads(result.stdout)}


def audit_count(server) -> int:
    conn = psycopg2.connect(server.dsn)
    try:
        return count(conn, "audit")
    finally:
        conn.close()


def test_a_monitor_created_changed_and_deleted_over_http_is_what_url_list_shows(server):
    created = send(server, "POST", "/api/v1/urls", {"url": "https://life.example/health", "name": "life",
                                                   "max-redirects": 2, "assert": ["status == 200"]})
    assert created.status_code == 201, created.text
    url_id = created.json()["id"]
    assert created.headers["location"] == f"/api/v1/urls/{url_id}"
    assert listed(server)["life"]["max_redirects"] == 2
    changed = send(server, "PATCH", f"/api/v1/urls/{url_id}", "period: 30\nmethod: HEAD\n", kind="application/yaml")
    assert changed.status_code == 200, changed.text
    assert changed.json() == {"id": url_id, "changed": ["method", "period"]}
    item = listed(server)["life"]
    assert (item["period"], item["method"], item["max_redirects"], item["assertions"]) == \
        (30, "HEAD", 2, ["status == 200"])
    deleted = send(server, "DELETE", f"/api/v1/urls/{url_id}")
    assert deleted.status_code == 200 and deleted.json()["removed"] is True
    assert "life" not in listed(server)
    again = send(server, "DELETE", f"/api/v1/urls/{url_id}")
    assert again.status_code == 404 and "not monitored" in again.json()["error"]
    assert send(server, "PATCH", "/api/v1/urls/999999", {"period": 30}).status_code == 404
    assert send(server, "DELETE", "/api/v1/urls/abc").status_code == 404


@pytest.mark.parametrize("body, field, message", [
    ({"url": "https://bad.example/", "period": "often"}, "period", "period must be a whole number"),
    ({"url": "https://bad.example/", "max-redirects": 99}, "max-redirects", "max redirects must be"),
    ({"url": "https://bad.example/", "colour": "red"}, "colour", "unknown option 'colour'"),
    ({"url": "ftp://bad.example/"}, "url", ""),
    ({"url": "https://bad.example/", "assert": ["status =="]}, "assert", "assert: bad expression"),
    ({"url": "https://bad.example/", "notify": ["pager"]}, "notify", "not a channel of alerts.channels"),
    ({"period": 30}, "url", "url is missing"),
])
def test_a_bad_field_is_a_400_naming_it_with_the_command_lines_message_and_nothing_written(server, body, field,
                                                                                          message):
    before = audit_count(server)
    refused = send(server, "POST", "/api/v1/urls", body)
    assert refused.status_code == 400, refused.text
    assert refused.json()["field"] == field and message in refused.json()["error"]
    assert "bad.example" not in json.dumps(listed(server)) and audit_count(server) == before
    if field in ("period", "max-redirects"):      # the same words as `sitewatch url add`
        flag = {"period": "--period", "max-redirects": "--max-redirects"}[field]
        cli = server.cli("url", "add", "https://bad.example/", flag, str(body[field]))
        assert cli.returncode == 2 and refused.json()["error"] in cli.stderr


def test_a_bad_change_is_refused_and_the_monitor_stays_as_it_was(server):
    url_id = send(server, "POST", "/api/v1/urls", {"url": "https://keep.example/", "name": "keep"}).json()["id"]
    before = listed(server)["keep"]
    for body, field in (({"method": "FETCH"}, "method"), ({"timeout": 0}, "timeout"), ({}, None)):
        refused = send(server, "PATCH", f"/api/v1/urls/{url_id}", body)
        assert refused.status_code == 400 and refused.json()["field"] == field, refused.text
    assert listed(server)["keep"] == before


def test_no_token_or_a_wrong_one_is_401_and_a_read_token_cannot_write(server):
    body = {"url": "https://auth.example/"}
    for token in (None, "not-a-token-at-all-xx", BROWSER):       # a web.auth entry does not write
        refused = send(server, "POST", "/api/v1/urls", body, token=token)
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
    refused = send(server, "POST", "/api/v1/urls", body, token=READ)
    assert refused.status_code == 403 and "scope read" in refused.json()["error"]
    assert send(server, "DELETE", "/api/v1/silences/1", token=READ).status_code == 403
    assert "auth.example" not in json.dumps(listed(server))
    # reads: web.auth as before, or a token of either scope
    assert send(server, "GET", "/api/v1/summary", token=None).status_code == 401
    for token in (BROWSER, READ, WRITE):
        assert send(server, "GET", "/api/v1/summary", token=token).status_code == 200


def test_a_name_or_url_already_taken_is_a_409(server):
    assert send(server, "POST", "/api/v1/urls", {"url": "https://dup.example/", "name": "dup"}).status_code == 201
    assert send(server, "POST", "/api/v1/urls", {"url": "https://dup.example/"}).status_code == 201
    taken = send(server, "POST", "/api/v1/urls", {"url": "https://other.example/", "name": "dup"})
    assert taken.status_code == 409 and taken.json()["field"] == "name"
    taken = send(server, "POST", "/api/v1/urls", {"url": "https://dup.example/"})
    assert taken.status_code == 409 and taken.json()["field"] == "url" and "already monitored" in taken.json()["error"]
    other = send(server, "POST", "/api/v1/urls", {"url": "https://other.example/", "name": "other"}).json()["id"]
    renamed = send(server, "PATCH", f"/api/v1/urls/{other}", {"name": "dup"})
    assert renamed.status_code == 409 and listed(server)["other"]["url"] == "https://other.example/"


@pytest.mark.parametrize("kind, body", [
    ("application/x-www-form-urlencoded", "url=https%3A%2F%2Fform.example%2F"),
    ("multipart/form-data; boundary=x", '--x\r\nContent-Disposition: form-data; name="url"\r\n\r\n'
                                        'https://form.example/\r\n--x--\r\n'),
    ("text/plain", '{"url": "https://form.example/"}'),
])
def test_a_form_post_cannot_write(server, kind, body):
    refused = send(server, "POST", "/api/v1/urls", body, kind=kind)
    assert refused.status_code == 415 and "JSON or YAML" in refused.json()["error"]
    assert send(server, "POST", "/api/v1/apply", "- https://form.example/\n", kind=kind).status_code == 415
    assert "form.example" not in json.dumps(listed(server))


def test_failed_authentication_is_rate_limited_per_client_address(server):
    other = httpx.Client(base_url=server.url, timeout=10,
                         transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    try:
        def attempt(token):
            return other.post("/api/v1/urls", content="{}", headers={"Authorization": f"Bearer {token}",
                                                                     "Content-Type": "application/json"})
        codes = [attempt(f"guess-{i:04d}-xxxxxxxxxxxx").status_code for i in range(10)]
        assert codes == [401] * 10
        blocked = attempt("guess-last-xxxxxxxxxxxx")
        assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) >= 1
        assert attempt(WRITE).status_code == 429          # even the right token, while blocked
        assert other.get("/api/v1/summary", headers={"Authorization": f"Bearer {READ}"}).status_code == 429
    finally:
        other.close()
    # another address is not blocked
    assert send(server, "GET", "/api/v1/summary", token=READ).status_code == 200


def test_api_changes_are_audited_under_the_tokens_name_without_secrets(server):
    created = send(server, "POST", "/api/v1/urls", {
        "url": f"https://bob:{SECRET_PASSWORD}@audit.example/", "name": "audited", "bearer": SECRET_BEARER,
        "headers": {"Cookie": "sid=cookie-secret-11", "X-Api-Key": "${API_KEY}"}})
    assert created.status_code == 201, created.text
    url_id = created.json()["id"]
    assert send(server, "PATCH", f"/api/v1/urls/{url_id}", {"bearer": "another-bearer-22"}).status_code == 200
    silence = send(server, "POST", "/api/v1/silences", {"pattern": "audited", "for": "2h", "reason": "upgrade"})
    assert silence.status_code == 201, silence.text
    assert send(server, "DELETE", f"/api/v1/silences/{silence.json()['id']}").status_code == 200
    assert send(server, "DELETE", f"/api/v1/urls/{url_id}").status_code == 200
    result = server.cli("audit", "--json", "--limit", "5")
    rows = json.loads(result.stdout)
    assert [row["action"] for row in rows] == ["url.remove", "silence.remove", "silence.add", "url.update", "url.add"]
    assert {row["actor"] for row in rows} == {"ci"}
    assert rows[-1]["after"]["bearer"] == "***" and rows[-1]["after"]["url"] == "https://***@audit.example/"
    assert rows[-2]["before"] == {"bearer": "***"} and rows[-2]["after"] == {"bearer": "***"}
    served = send(server, "GET", "/api/v1/audit?limit=5", token=READ).json()["items"]     # the same rows
    assert [(row["id"], row["action"], row["after"]) for row in served] == \
        [(row["id"], row["action"], row["after"]) for row in rows]
    text = result.stdout + server.cli("audit").stdout + json.dumps(served)
    for secret in (SECRET_BEARER, SECRET_PASSWORD, "cookie-secret-11", "${API_KEY}", "another-bearer-22", WRITE):
        assert secret not in text


def test_silences_over_http(server):
    assert send(server, "POST", "/api/v1/urls", {"url": "https://quiet.example/", "name": "quiet"}).status_code == 201
    made = send(server, "POST", "/api/v1/silences", "pattern: 'https://*.example/*'\nfor: 15m\n",
                kind="application/yaml")
    assert made.status_code == 201 and made.json()["pattern"] == "https://*.example/*"
    listing = json.loads(server.cli("silence", "list", "--json").stdout)
    assert any(row["id"] == made.json()["id"] and row["active"] for row in listing)
    for body, field in (({"pattern": "quiet", "for": "forever"}, "for"), ({"pattern": "quiet", "for": "400d"}, "for"),
                        ({"pattern": "nobody", "for": "1h"}, "pattern"), ({"for": "1h"}, "pattern"),
                        ({"pattern": "quiet", "for": "1h", "until": "x"}, "until")):
        refused = send(server, "POST", "/api/v1/silences", body)
        assert refused.status_code in (400, 404) and refused.json()["field"] == field, refused.text
    # a glob is over URLs: one matching only monitors' names would cover nothing (refused, as by the CLI)
    names = send(server, "POST", "/api/v1/silences", {"pattern": "quie*", "for": "1h"})
    assert names.status_code == 400 and names.json()["field"] == "pattern", names.text
    assert "matches no monitored URL, only the names of quiet" in names.json()["error"]
    ended = send(server, "DELETE", f"/api/v1/silences/{made.json()['id']}")
    assert ended.status_code == 200       # as README's table and walk-through show it
    assert ended.json() == {"id": made.json()["id"], "ended": True, "pattern": "https://*.example/*"}
    assert send(server, "DELETE", "/api/v1/silences/987654").status_code == 404


def test_apply_over_http_plans_with_dry_run_and_writes_nothing_until_asked(server):
    conn = psycopg2.connect(server.dsn)
    try:
        def state():
            with conn, conn.cursor() as cur:
                cur.execute("SELECT id, url, name, period FROM url ORDER BY id")
                return cur.fetchall(), count(conn, "audit")
        text = json.dumps([{"url": "https://applied.example/", "name": "applied", "period": 45},
                           "https://applied-too.example/"])
        before = state()
        planned = send(server, "POST", "/api/v1/apply?dry_run=1&prune=1", text)
        assert planned.status_code == 200, planned.text
        plan = planned.json()
        assert plan["dry_run"] is True and plan["added"] == 2 and plan["removed"] == len(before[0])
        assert "+ applied" in plan["plan"] and plan["text"].startswith("+ applied\n")
        assert state() == before
        done = send(server, "POST", "/api/v1/apply", text, headers={"Accept": "text/plain"})
        assert done.status_code == 200 and done.text == "+ applied\n+ https://applied-too.example/\n"
        assert listed(server)["applied"]["period"] == 45
        assert send(server, "POST", "/api/v1/apply", text).json()["plan"] == []
        bad = send(server, "POST", "/api/v1/apply", "- url: https://x.example/\n  period: 1\n", kind="application/yaml")
        assert bad.status_code == 400 and bad.json()["field"] == "period" and "entry 1 (line 1)" in bad.json()["error"]
        assert send(server, "POST", "/api/v1/apply?prune=maybe", text).json()["field"] == "prune"
        rows = json.loads(server.cli("audit", "--json", "--limit", "1").stdout)
        assert rows[0]["action"] == "apply" and rows[0]["actor"] == "ci" and rows[0]["target"] == "+2 ~0 -0"
    finally:
        conn.close()


def test_without_a_write_token_the_write_api_does_not_exist(server, tmp_path):
    alone = WebServer(tmp_path, server.dsn, {"SITEWATCH_WEB__TOKENS": json.dumps({"g": {"token": READ}})})
    try:
        for method, path in (("POST", "/api/v1/urls"), ("PATCH", "/api/v1/urls/1"), ("DELETE", "/api/v1/urls/1"),
                             ("POST", "/api/v1/apply"), ("POST", "/api/v1/silences")):
            refused = send(alone, method, path, {"url": "https://off.example/"})
            assert refused.status_code == 404 and "write API is off" in refused.json()["error"]
        assert alone.get("/api/v1/summary").status_code == 200       # no web.auth: reads stay open
    finally:
        alone.stop()


def test_a_token_from_an_unset_variable_refuses_web_and_run_alone(server, sitewatch, tmp_path):  # noqa: F811
    """Only what serves web.tokens needs them: `web`, and `run` with web.listen, refuse an unset
    `${VAR}` (one line, exit 2, naming the variable); every other command works, `config show`
    warns, and no output ever holds a resolved token."""
    unset = {"SITEWATCH_WEB__TOKENS": TOKENS}
    for args, env in ((["web", "--listen", "127.0.0.1:0"], {}), (["run"], {"SITEWATCH_WEB__LISTEN": "127.0.0.1:0"})):
        result = server.cli(*args, env={**unset, **env})
        assert result.returncode == 2 and result.stdout == "", result.stderr
        assert result.stderr == "sitewatch: error: web.tokens: ci: ${SW_TEST_CI_TOKEN} is not set in the " \
                                "environment (env SITEWATCH_WEB__TOKENS)\n"
    entry = tmp_path / "one.yaml"
    entry.write_text("- url: https://unset-token.example/\n")
    for args in (["url", "list"], ["status"], ["audit", "--limit", "1"], ["apply", "--dry-run", str(entry)],
                 ["silence", "list"], ["maintenance", "list"]):
        result = server.cli(*args, env=unset)
        assert result.returncode == 0 and "web.tokens" not in result.stderr, (args, result.stderr)
    shown = server.cli("config", "show", env=unset)
    assert shown.returncode == 0
    assert "web.tokens = {ci: {token: ***, scope: write}, grafana: {token: ***, scope: read}}" in shown.stdout
    warned = [line for line in shown.stderr.splitlines() if "web.tokens" in line]
    assert warned == ["sitewatch: warning: web.tokens: ci: ${SW_TEST_CI_TOKEN} is not set in the environment "
                      "(env SITEWATCH_WEB__TOKENS): `sitewatch web` and `sitewatch run` (with web.listen) "
                      "refuse to start"]
    run = sitewatch(env=unset)                     # web.listen empty (clean_env): no web child
    run.wait_started()
    assert "web.tokens" not in run.text()
    # resolved, the secret appears nowhere: config show, a warning, a refusal for its length
    short = "0123456789"
    for env, args in (({"SW_TEST_CI_TOKEN": WRITE}, ["config", "show"]),
                      ({"SW_TEST_CI_TOKEN": short}, ["config", "show"]),
                      ({"SW_TEST_CI_TOKEN": short}, ["web", "--listen", "127.0.0.1:0"])):
        result = server.cli(*args, env={**unset, **env})
        assert env["SW_TEST_CI_TOKEN"] not in result.stdout + result.stderr and READ not in result.stdout
    refused = server.cli("web", "--listen", "127.0.0.1:0", env={**unset, "SW_TEST_CI_TOKEN": short})
    assert refused.returncode == 2 and "ci: the token from the environment must be at least 16" in refused.stderr
    written = '{"x": {"token": "short", "scope": "write"}}'     # too short as written: refused everywhere
    too_short = server.cli("config", "show", env={"SITEWATCH_WEB__TOKENS": written})
    assert too_short.returncode == 2 and "at least 16 characters" in too_short.stderr


