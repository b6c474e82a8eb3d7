"""tcp:// and tls:// monitors through the real `sitewatch` command and `sitewatch run` (issue 20):
stored, listed, updated, imported, checked, refused with exit 2 and nothing written, and checked
by the consumers into task_result."""

import json

import pytest

from sitewatch.check.choice import curl_available
from tests.conftest import cli_for, count
from tests.kindservers import StreamServer, certificates, handshake_only, ping_pong, tls_context
from tests.test_run import query, wait_until
from tests.test_run import sitewatch as sitewatch  # noqa: F401  (fixture)


@pytest.fixture
def pong():
    server = StreamServer(ping_pong)
    yield server
    server.close()


@pytest.fixture(scope="module")
def short_lived(tmp_path_factory):
    return certificates(tmp_path_factory.mktemp("kinds-cli-tls"), days_left=3.5)


@pytest.fixture
def tls_server(short_lived):
    server = StreamServer(handshake_only, tls_context(short_lived))
    yield server
    server.close()


def stored(db):
    """(url, body bytes, regex, assertions) of each monitor."""
    rows = query(db, "SELECT url, body, regex, assertions FROM url ORDER BY id")
    return [(url, None if body is None else bytes(body), regex, assertions) for url, body, regex, assertions in rows]


def test_url_add_stores_send_and_expect_and_check_prints_the_verdict(cli, db, pong):
    url = pong.url()
    added = cli("url", "add", url, "--send", r"PING\r\n", "--expect", "PONG")
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == f"added {url} (every 60 s, expect 'PONG')"
    assert stored(db) == [(url, b"PING\r\n", "PONG", [])]

    listed = cli("url", "list")
    assert "send 'PING\\r\\n'" in listed.stdout and "expect /PONG/" in listed.stdout, listed.stdout
    row = json.loads(cli("url", "list", "--json").stdout)[0]
    assert (row["send"], row["expect"], row["body"], row["regex"]) == ("PING\r\n", "PONG", None, None)

    checked = cli("check", url, "--send", r"PING\r\n", "--expect", "PONG")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Verdict:  UP" in checked.stdout and "Expect:   'PONG' matched" in checked.stdout
    assert "Status:" not in checked.stdout          # a tcp check has no status
    assert pong.received[-1] == b"PING\r\n"

    failed = cli("check", url, "--send", r"HELO\r\n", "--expect", "PONG")
    assert failed.returncode == 1
    assert "Verdict:  DOWN" in failed.stdout and "[regex] expect 'PONG' not found" in failed.stdout


def test_url_update_changes_send_and_expect_in_place(cli, db, pong):
    url = pong.url()
    assert cli("url", "add", url, "--send", r"PING\n", "--expect", "PONG").returncode == 0
    updated = cli("url", "update", url, "--expect", "^PONG$", "--timeout", "3")
    assert updated.returncode == 0, updated.stderr
    assert "expect" in updated.stdout and "regex" not in updated.stdout
    assert [(b, r) for _, b, r, _ in stored(db)] == [(b"PING\n", "^PONG$")]   # send kept
    assert cli("url", "update", url, "--send", "").returncode == 0
    assert [(b, r) for _, b, r, _ in stored(db)] == [(None, "^PONG$")]
    refused = cli("url", "update", url, "--header", "X-A: b")
    assert refused.returncode == 2 and "does not apply to a tcp:// monitor" in refused.stderr
    refused = cli("url", "update", url, "--assert", "json $.x == 1")
    assert refused.returncode == 2 and "'json $.x == 1' does not apply to a tcp:// monitor" in refused.stderr
    assert [a for _, _, _, a in stored(db)] == [[]]


def test_url_import_takes_send_and_expect(cli, db, pong, tls_server):
    text = (f"- url: {pong.url()}\n  send: 'PING\\r\\n'\n  expect: PONG\n"
            f"- url: {tls_server.url('tls')}\n  assert: cert_days > 14\n")
    done = cli("url", "import", "-", input=text)
    assert done.returncode == 0, done.stderr
    assert stored(db) == [(pong.url(), b"PING\r\n", "PONG", []),
                          (tls_server.url("tls"), None, None, ["cert_days > 14"])]


@pytest.mark.parametrize("args, words", [
    (["tcp://127.0.0.1"], "a tcp:// URL needs a port"),
    (["tcp://127.0.0.1:7", "--assert", "json $.x == 1"], "'json $.x == 1' does not apply to a tcp:// monitor"),
    (["tcp://127.0.0.1:7", "--bearer", "x"], "bearer does not apply to a tcp:// monitor"),
    (["https://example.com/", "--send", "x"], "send does not apply to an http(s) monitor"),
    (["tls://127.0.0.1:7", "--degraded", "body contains \"x\""], "does not apply to a tls:// monitor"),
])
def test_a_bad_definition_exits_2_writing_nothing(cli, db, args, words):
    for command in (["url", "add"], ["check"]):
        done = cli(*command, *args)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert words in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert count(db, "url") == 0


def test_url_import_names_a_bad_entry_and_writes_nothing(cli, db, pong):
    text = f"- url: {pong.url()}\n  send: PING\n- url: {pong.url('tls')}\n  assert: 'json $.x == 1'\n"
    done = cli("url", "import", "-", input=text)
    assert done.returncode == 2
    assert "entry 2 (line 3)" in done.stderr and "'json $.x == 1' does not apply to a tls:// monitor" in done.stderr
    assert count(db, "url") == 0


def test_check_tls_prints_days_left_and_judges_cert_days(tmp_path, tls_server, short_lived):
    cli = cli_for(tmp_path, "postgresql://nobody@127.0.0.1:1/none")   # `check` opens no database
    env = {"SSL_CERT_FILE": short_lived["ca"]}     # trusted as the system's CAs would be
    up = cli("check", tls_server.url("tls"), env=env)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "Verdict:  UP" in up.stdout and "TLS cert: expires in 3 days" in up.stdout
    down = cli("check", tls_server.url("tls"), "--assert", "cert_days > 14", env=env)
    assert down.returncode == 1
    assert "[assertion] cert_days > 14: got 3" in down.stdout and "FAIL  cert_days > 14  (got 3)" in down.stdout
    untrusted = cli("check", tls_server.url("tls"), "--output-json")
    outcome = json.loads(untrusted.stdout)
    assert (outcome["error_kind"], outcome["cert_days_left"]) == ("tls", 3)


@pytest.mark.parametrize("engine", ["auto", "urllib3"])    # auto: the default (curl when pycurl imports)
def test_sitewatch_run_records_tcp_and_tls_results(sitewatch, cli, db, pong, tls_server, short_lived,  # noqa: F811
                                                   hostile_server, engine):
    done = cli("url", "import", "-", env={"MIN_PERIOD": "1"}, input=(
        f"- url: {pong.url()}\n  period: 1\n  send: 'PING\\r\\n'\n  expect: PONG\n"
        f"- url: {tls_server.url('tls')}\n  period: 1\n  assert: cert_days > 14\n"
        f"- url: {hostile_server.url('/ok')}\n  period: 1\n"))
    assert done.returncode == 0, done.stderr
    run = sitewatch(env={"SSL_CERT_FILE": short_lived["ca"], "SITEWATCH_CHECK__ENGINE": engine})
    started = run.wait_for("consumer started")[-1]["engine"]
    assert started == ("urllib3" if engine == "urllib3" or not curl_available() else "curl")
    sql = ("SELECT u.url, r.ok, r.error_kind, r.error, r.cert_days_left, r.regex_matched, r.status_code"
           " FROM task_result r JOIN url u ON u.id = r.url_id ORDER BY r.started_at")
    monitors = {pong.url(), tls_server.url("tls"), hostile_server.url("/ok")}
    wait_until(lambda: {row[0] for row in query(db, sql)} == monitors, 20, f"a result of each monitor ({started})")
    results = {row[0]: row[1:] for row in query(db, sql)}
    assert results[pong.url()] == (True, None, None, None, True, None)
    assert results[tls_server.url("tls")] == (False, "assertion", "cert_days > 14: got 3", 3, None, None)
    assert results[hostile_server.url("/ok")][0] is True and results[hostile_server.url("/ok")][-1] == 200
    status = json.loads(cli("status", "--json").stdout)
    assert {row["url"]: row["cert_days_left"] for row in status}.get(tls_server.url("tls")) == 3
