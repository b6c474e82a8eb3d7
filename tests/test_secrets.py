"""Secrets stay secret: canary credentials planted in the DSN and in URLs never come out.

A role with a canary password is created on the test server (trust authentication does not
check it, but it travels in the DSN), and URLs carry canary tokens in their userinfo and
query string, some of them pointing at a closed port or at hostile endpoints that echo the
request back, so that errors are produced. Then every command a user runs, and
`sitewatch run` at two log levels, is searched for the canaries: stdout, stderr, every log
line, every task_result row, and the command line and title of every process of the run.
"""

import os
import subprocess
import sys
from urllib.parse import quote

import psycopg2.extensions
import pytest

from tests.conftest import clean_env
from tests.test_faults import OddServer, closed_port, raw_reply
from tests.test_run import Run, group_processes, query, scalar, wait_until

PASSWORD = "pw-CANARY-123"
TOKEN = "tok-CANARY-456"
QUERY_TOKEN = "q-CANARY-789"
CANARIES = (PASSWORD, TOKEN, QUERY_TOKEN, "CANARY")


def assert_no_canary(what: str, text) -> None:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    for canary in CANARIES:
        assert canary not in text, f"{canary!r} leaked in {what}:\n{text[-3000:]}"


@pytest.fixture
def canary_dsns(dsn, db):
    """(URI DSN, key=value DSN) of the test database as a role whose password is the canary."""
    role = f"canary_user_{os.getpid()}"
    with db.cursor() as cur:
        cur.execute(f"DROP ROLE IF EXISTS {role}")
        cur.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'")
        cur.execute(f"GRANT ALL ON SCHEMA public TO {role}")
        cur.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}")
        cur.execute(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}")
    params = psycopg2.extensions.parse_dsn(dsn)
    host, port, name = params.get("host", "127.0.0.1"), params.get("port"), params["dbname"]
    if host.startswith("/"):        # the embedded server: a unix socket directory
        uri = f"postgresql://{role}:{PASSWORD}@/{name}?host={quote(host, safe='')}" + (f"&port={port}" if port else "")
    else:
        uri = f"postgresql://{role}:{PASSWORD}@{host}{':' + port if port else ''}/{name}"
    yield uri, psycopg2.extensions.make_dsn(dsn, user=role, password=PASSWORD)
    with db.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
        cur.execute(f"DROP OWNED BY {role}")
        cur.execute(f"DROP ROLE {role}")


def echo_as_header(request_line: bytes) -> bytes:
    """Our request line (with its query string) sent back as a malformed header line."""
    return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n" + request_line + b"\r\nX-After: 1\r\n\r\nok"


def echo_as_location(request_line: bytes) -> bytes:
    target = request_line.split(b" ")[1] if request_line.count(b" ") >= 2 else b"/"
    return raw_reply(status=b"HTTP/1.1 302 Found", headers=[b"Location: " + target + b"&again=1"], body=b"")


def echo_as_status(request_line: bytes) -> bytes:
    return b"HTTP/1.1 " + request_line + b"\r\n\r\n"


@pytest.fixture
def echo_server():
    server = OddServer({"/echo-as-header": echo_as_header, "/echo-as-location": echo_as_location,
                        "/echo-as-status": echo_as_status})
    yield server
    server.close()


def test_canary_secrets_appear_in_no_output_log_row_or_process_title(tmp_path, canary_dsns, db, hostile_server,
                                                                    echo_server):
    uri, keyvalue = canary_dsns
    userinfo = f"user:{TOKEN}"
    query_string = f"?token={QUERY_TOKEN}"
    ok_url = hostile_server.url(f"/ok{query_string}", userinfo=userinfo)
    urls = [hostile_server.url(f"{path}{query_string}", userinfo=userinfo) for path in
            ("/echo-request-line", "/redirect-loop", "/bad-header-line", "/not-http", "/status/503", "/hang",
             "/echo-headers")]
    urls += [echo_server.url(f"{path}{query_string}", userinfo=userinfo) for path in
             ("/echo-as-header", "/echo-as-location", "/echo-as-status")]
    urls.append(f"http://{userinfo}@127.0.0.1:{closed_port()}/down{query_string}")
    urls.append(f"http://{userinfo}@no-such-host.invalid/dns{query_string}")
    outputs = []

    def sitewatch(*args, dsn=uri, input=None, expect=0):
        env = clean_env(tmp_path, DB_DSN=dsn, MIN_PERIOD=1)
        done = subprocess.run([sys.executable, "-m", "sitewatch", *args], input=input, env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)
        outputs.append((args, done))
        assert done.returncode == expect, (args, done.returncode, done.stderr)
        return done

    sitewatch("db", "migrate")
    sitewatch("url", "add", ok_url, "-p", "1", "-r", "hello")
    sitewatch("url", "add", ok_url, expect=2)                                    # a duplicate
    debug_dup = sitewatch("--log-level", "debug", "url", "add", ok_url, dsn=keyvalue, expect=2)
    assert "Traceback" in debug_dup.stderr                                       # the traceback path ran
    sitewatch("url", "import", "-", input="".join(f"- url: '{url}'\n  period: 1\n  timeout: 2\n" for url in urls))
    sitewatch("config", "show")
    sitewatch("--log-level", "debug", "config", "show", dsn=keyvalue)

    # sitewatch run, at debug level and at the default level; look at every process while it runs.
    for name, global_args in (("run-debug", ("--log-level", "debug")), ("run-default", ())):
        run = Run(tmp_path, uri, "--consumers", "2", name=name, global_args=global_args)
        try:
            run.wait_started(consumers=2)
            t0 = scalar(db, "SELECT now()")
            wait_until(lambda t=t0: scalar(db, "SELECT count(DISTINCT url_id) FROM task_result"
                                               " WHERE recorded_at > %s", (t,)) == len(urls) + 1,
                       20, "a result for every URL")
            processes = group_processes(run.pid)
            assert len(processes) >= 4
            for proc in processes:
                with open(f"/proc/{proc.pid}/cmdline", "rb") as f:
                    assert_no_canary(f"the command line of {proc.pid}", f.read())
                with open(f"/proc/{proc.pid}/comm", "rb") as f:
                    assert_no_canary(f"the name of {proc.pid}", f.read())
                assert_no_canary(f"the title of {proc.pid}", " ".join(proc.cmdline()))
            code, _ = run.stop(timeout=20)
            assert code == 0, run.text()[-2000:]
        finally:
            run.kill_group()
        assert run.events("sitewatch running")
        assert_no_canary(f"the log of {name}", run.text())

    sitewatch("url", "list")
    sitewatch("url", "list", "--json", dsn=keyvalue)
    # An unexpected database error (the role may no longer write): the "internal error" path, with
    # its traceback at debug level.
    role = psycopg2.extensions.parse_dsn(keyvalue)["user"]
    with db.cursor() as cur:
        cur.execute(f"REVOKE INSERT ON url FROM {role}")
    denied = sitewatch("--log-level", "debug", "url", "add", ok_url.replace("/ok", "/ok2"), expect=1)
    assert "Traceback" in denied.stderr and "internal error" in denied.stderr, denied.stderr

    # Failures with the canary password in the DSN: unreachable, and DSNs libpq cannot parse (which
    # it quotes back in its error message).
    port = closed_port()
    broken = [f"postgresql://user:{PASSWORD}@127.0.0.1:{port}/db",
              f"host=127.0.0.1 port={port} user=u password={PASSWORD}",
              f"postgresql://user:{PASSWORD}%zz@127.0.0.1:{port}/db",
              f"postgresql://user:{PASSWORD}@[::1/db",
              f"postgresql://user:{PASSWORD}@127.0.0.1:{port}/db?sslmode=bogus"]
    for bad in broken:
        sitewatch("url", "list", dsn=bad, expect=1)
        sitewatch("--log-level", "debug", "db", "migrate", dsn=bad, expect=1)
        sitewatch("config", "show", dsn=bad)
        run = Run(tmp_path, bad, name="run-unreachable")
        try:
            assert run.proc.wait(20) == 1
        finally:
            run.kill_group()
        assert_no_canary(f"`sitewatch run` with DSN {bad!r}", run.text())

    for args, done in outputs:
        assert_no_canary(f"the stdout of {args}", done.stdout)
        assert_no_canary(f"the stderr of {args}", done.stderr)

    # The results: errors were recorded (the hostile URLs did their job), none holds a canary.
    rows = query(db, "SELECT r::text, r.error FROM task_result r")
    assert sum(1 for _, error in rows if error) >= len(urls) - 2, rows
    for text, _ in rows:
        assert_no_canary("a task_result row", text)
    kinds = {kind for (kind,) in query(db, "SELECT DISTINCT error_kind FROM task_result")}
    assert {"connect", "protocol", "redirects", "status", "timeout"} <= kinds, kinds
    # The server did receive the credentials: the canaries were live, not stripped before use.
    assert scalar(db, "SELECT count(*) FROM task_result r JOIN url u ON u.id = r.url_id"
                      " WHERE u.url LIKE %s AND r.ok", (f"%{TOKEN}%/ok?%",)) >= 1
