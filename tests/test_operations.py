"""Operations: /metrics, /healthz, /readyz, Sentry, ECS logs (issue 11).

Real parts only: the real `sitewatch run` (tests/test_run.py's Run, in its own process
group), its metrics listener on a port of its own (metrics.listen 127.0.0.1:0; the
"sitewatch running" log line names the URL), scraped over a real socket and parsed with
prometheus_client's own text parser, and the test's PostgreSQL.
"""

import gzip
import http.server
import json
import pickle
import select
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sitewatch.operations.metrics import CODE_CLASSES, ERROR_KINDS, CheckCounts
from sitewatch.operations.registry import Metrics
from tests import test_faults, test_run, test_secrets
from tests.conftest import clean_env
from tests.test_run import import_urls, query, wait_until

# Fixtures shared with the run and fault tests.
sitewatch = test_run.sitewatch    # `sitewatch run` on the test's database, killed at teardown
runs = test_faults.runs           # `sitewatch run` on any DSN, killed at teardown
canary_dsns = test_secrets.canary_dsns   # the test database as a role whose password is a canary

# --- helpers ------------------------------------------------------------------------


def metrics_url(run) -> str:
    return run.wait_for("sitewatch running")[0]["metrics"]


def get(url: str, timeout: float = 10) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def scrape(url: str) -> dict[tuple, float]:
    """(sample name, sorted labels) -> value, parsed with prometheus_client's text parser."""
    status, text = get(url)
    assert status == 200, text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def monotonic_samples(samples: dict) -> dict:
    """The samples that must never go down: counters and histogram buckets, counts and sums."""
    return {key: value for key, value in samples.items()
            if key[0].startswith("sitewatch_") and key[0].endswith(("_total", "_bucket", "_count", "_sum"))}


def checks_by_result(samples: dict) -> dict[tuple, float]:
    return {(dict(labels)["result"], dict(labels)["error_kind"]): value
            for (name, labels), value in samples.items() if name == "sitewatch_checks_total" and value}


# --- the children's counts and the supervisor's fold (pure) ---------------------------------


def test_a_worst_case_stats_message_fits_one_atomic_pipe_write():
    counts = CheckCounts()
    for kind in [*ERROR_KINDS, None, "something new"]:
        for ok in (True, False):
            for code in (100, 200, 302, 404, 503, 999, None):
                counts.result(ok, kind, code)
    for i in range(10_000):
        counts.observe(i * 0.037, i * 0.5)
    stats = {"checks": 10**12, "ok": 10**12, "failed": 10**12, "refused": 10**12,
             "lags": [123.4567 + i for i in range(200)], **counts.take(), "db_errors": 10**9}
    assert len(pickle.dumps(("consumer-1024", stats))) <= select.PIPE_BUF - 8


def test_fold_adds_deltas_and_ignores_malformed_parts():
    metrics = Metrics()
    counts = CheckCounts()
    counts.result(False, "timeout", None)
    counts.result(True, None, 200)
    counts.result(False, "brand-new-kind", 503)
    counts.observe(0.2, 0.01)
    message = {**counts.take(), "db_errors": 2, "refused": 1}
    metrics.fold("consumer-1", message)
    metrics.fold("consumer-1", message)
    metrics.fold("consumer-2", {"results": "garbage", "codes": [1], "duration": [1, 2], "lag": None,
                                "db_errors": -5, "notifications": {("slack", "sent"): 3, "bad": 1}})
    metrics.fold("consumer-2", {"results": {(True, 5): 1, (False, None): "1"}, "codes": ["a"] * 5,
                                "duration": ["x"] * (len(metrics.duration.counts) + 1),
                                "lag": [None] * (len(metrics.lag.counts) + 1), "refused": 1.5})
    assert metrics.results == {(False, "timeout"): 2, (True, None): 2, (False, "other"): 2, (True, "other"): 1}
    assert dict(zip(CODE_CLASSES, metrics.codes, strict=True)) == {"1xx": 0, "2xx": 2, "3xx": 0, "4xx": 0,
                                                                    "5xx": 2}
    assert sum(metrics.duration.counts) == 2 and sum(metrics.lag.counts) == 2
    assert metrics.db_errors == {"consumer-1": 4, "consumer-2": 0} and metrics.refused == 2
    assert metrics.notifications == {("slack", "sent"): 3}


# --- against a running sitewatch ----------------------------------------------------------


def test_scrape_parses_and_check_counters_equal_the_rows_in_task_result(sitewatch, cli, db, hostile_server):
    """Issue 11, test 1: after a run with 2 consumers the counters equal task_result."""
    run = sitewatch("--consumers", "2")
    run.wait_started(consumers=2)
    url = metrics_url(run)
    import_urls(cli, [{"url": hostile_server.url(f"/ok/{i}"), "period": 1} for i in range(6)]
                + [{"url": hostile_server.url("/status/503"), "period": 1},
                   {"url": hostile_server.url("/status/404"), "period": 1},
                   {"url": hostile_server.url("/redirect-loop"), "period": 1},
                   {"url": f"http://127.0.0.1:{closed_port()}/", "period": 1}])
    wait_until(lambda: query(db, "SELECT count(DISTINCT checked_by) = 2 AND count(DISTINCT coalesce(error_kind, ''))"
                                 " >= 4 FROM task_result")[0][0], 20, "results of each kind from both consumers")
    # Stop the flow: removed URLs lose their pending tasks, and a result that still comes
    # back is refused by the lease fence (neither recorded nor counted).
    for (address,) in query(db, "SELECT url FROM url"):
        assert cli("url", "remove", address).returncode == 0

    def table():
        rows = query(db, "SELECT ok, coalesce(error_kind, ''), count(*) FROM task_result GROUP BY 1, 2")
        return {("ok" if ok else "failed", kind): float(n) for ok, kind, n in rows}

    def settled():
        samples = scrape(url)
        return samples if checks_by_result(samples) == table() else None
    samples = wait_until(settled, 20, "sitewatch_checks_total to equal task_result")
    expected = table()
    assert {kind for _, kind in expected} >= {"", "status", "connect", "redirects"}, expected

    codes = dict(query(db, "SELECT (status_code / 100)::text || 'xx', count(*) FROM task_result "
                           "WHERE status_code IS NOT NULL GROUP BY 1"))
    got_codes = {dict(labels)["code_class"]: value for (name, labels), value in samples.items()
                 if name == "sitewatch_http_responses_total" and value}
    assert got_codes == {k: float(v) for k, v in codes.items()}
    total = sum(expected.values())
    assert samples[("sitewatch_schedule_lag_seconds_count", ())] >= total
    assert samples[("sitewatch_check_duration_seconds_count", ())] >= total
    assert samples[("sitewatch_build_info", (("version", "0.1.0"),))] == 1
    assert samples[("sitewatch_queue_tasks", (("state", "waiting"),))] == 0
    assert samples[("sitewatch_urls", (("state", "unknown"),))] == 0
    assert any(name.startswith("process_") for name, _ in samples), "the supervisor's process metrics"


def test_schedule_behind_gauge_reads_the_oldest_due_cursor(db, dsn):
    """With backpressure the queue stays near a batch under overload (run/producer.py): the
    wait shows in the due cursors, and this gauge is how a dashboard sees it."""
    from sitewatch import logs
    from sitewatch.db.database import Reconnecting
    from sitewatch.operations.registry import ClusterGauges

    def behind():
        connection = Reconnecting(dsn, 5.0, "test", logs.get())
        try:
            return {s.name: s.value for family in Metrics(ClusterGauges(connection)).collect()
                    for s in family.samples}["sitewatch_schedule_behind_seconds"]
        finally:
            connection.close()

    query(db, "INSERT INTO url (url, period, timeout, next_check_at) VALUES "
              "('http://later.example/', 60, 5, now() + interval '30 s') RETURNING id")
    assert behind() == 0.0                              # nothing due
    query(db, "INSERT INTO url (url, period, timeout, next_check_at) VALUES "
              "('http://held.example/', 60, 5, now() - interval '40 s') RETURNING id")
    assert 39.0 <= behind() < 60.0


def test_killed_and_frozen_consumers_leave_every_counter_and_readyz_follows(sitewatch, cli, hostile_server):
    """Issue 11, test 2, and /readyz, in one run of 2 consumers (were two tests starting the same
    run): /healthz and /readyz answer 200; consumer 1 killed with SIGKILL and replaced, then
    consumer 2 frozen (SIGSTOP) until it is killed for its silence and replaced: no counter ever
    goes down, /readyz is 503 naming consumer-2 while it is frozen and 200 once it is replaced,
    and /healthz stays 200 throughout."""
    run = sitewatch("--consumers", "2")
    run.wait_started(consumers=2)
    url = metrics_url(run)
    base = url.removesuffix("/metrics")
    assert get(f"{base}/healthz") == (200, "ok\n")
    wait_until(lambda: get(f"{base}/readyz") == (200, "ok\n"), 10, "/readyz 200")
    assert get(f"{base}/nothing")[0] == 404
    import_urls(cli, [{"url": hostile_server.url(f"/ok/{i}"), "period": 1} for i in range(10)]
                + [{"url": hostile_server.url("/status/500"), "period": 1}])
    wait_until(lambda: sum(checks_by_result(scrape(url)).values()) >= 20, 20, "checks counted")
    samples = [monotonic_samples(scrape(url))]

    def counters_held():
        """Scrape again: no counter below its last value (the new consumer's first stats come
        within 5 s; the frozen one's phase below lasts its 10 s heartbeat timeout and more)."""
        now = monotonic_samples(scrape(url))
        went_down = {key: (samples[-1][key], now.get(key)) for key in samples[-1]
                     if now.get(key, -1) < samples[-1][key]}
        assert not went_down, f"counters went down after a consumer was killed: {went_down}"
        samples.append(now)
        return now

    run.child("sitewatch: consumer 1").send_signal(signal.SIGKILL)
    run.wait_for("child died, restarting", role="consumer-1")
    run.wait_for("consumer started", count=3)
    counters_held()
    frozen = run.child("sitewatch: consumer 2")
    frozen.send_signal(signal.SIGSTOP)     # alive, but silent: heartbeat_timeout is 10 s in these tests
    _, reason = wait_until(lambda: counters_held() and (lambda r: r if r[0] == 503 else None)(
        get(f"{base}/readyz")), 10, "/readyz 503 for the frozen consumer")
    assert reason.startswith("consumer-2 ") and len(reason.splitlines()) == 1, reason
    assert get(f"{base}/healthz")[0] == 200       # the supervisor itself is fine
    wait_until(lambda: counters_held() and run.events("child silent, killing it", role="consumer-2"), 20,
               "consumer-2 killed for its silence")
    wait_until(lambda: counters_held() and get(f"{base}/readyz")[0] == 200, 20,
               "/readyz 200 once consumer-2 is replaced")
    last = counters_held()
    assert last[("sitewatch_child_restarts_total", (("role", "consumer-1"),))] == 1
    assert last[("sitewatch_child_restarts_total", (("role", "consumer-2"),))] == 1
    assert sum(checks_by_result(scrape(url)).values()) > 20
    assert len(samples) >= 10


def test_ten_thousand_more_urls_add_no_series(sitewatch, cli, hostile_server):
    """Issue 11, test 3: no label takes a URL."""
    run = sitewatch()
    run.wait_started()
    url = metrics_url(run)
    import_urls(cli, [{"url": hostile_server.url(f"/ok/first-{i}"), "period": 1} for i in range(5)])
    wait_until(lambda: checks_by_result(scrape(url)), 20, "checks counted")
    before = set(scrape(url))
    checked = sum(checks_by_result(scrape(url)).values())
    text = "\n".join(hostile_server.url(f"/ok/many-{i}") for i in range(10_000)) + "\n"
    done = cli("url", "import", "-", input=text, env={"SITEWATCH_CHECK__DEFAULT_PERIOD": "60"})
    assert done.returncode == 0, done.stderr
    # Every state's series exists from the start (0 or more); the first five are up by now.
    wait_until(lambda: sum(value for (name, _), value in scrape(url).items() if name == "sitewatch_urls") == 10_005,
               20, "the URL gauge to count 10,005 URLs")
    # Checks of the new URLs counted (the first five add 5 a second; the new ones about 170):
    wait_until(lambda: sum(checks_by_result(scrape(url)).values()) >= checked + 300, 30,
               "checks of the new URLs counted")
    after = set(scrape(url))
    assert after == before, f"series added: {sorted(after - before)[:10]}, removed: {sorted(before - after)[:10]}"


def test_blackbox_compatible_per_url_metrics_are_opt_in_capped_and_redacted(sitewatch, cli, db, hostile_server):
    run = sitewatch(env={"SITEWATCH_METRICS__PER_URL": "true", "SITEWATCH_METRICS__PER_URL_LIMIT": "3"})
    run.wait_started()
    url = metrics_url(run)
    urls = [hostile_server.url("/ok/bb"), hostile_server.url("/status/503"),
            hostile_server.url("/ok/secret", userinfo="u:tok-BB-SECRET") + "?key=q-BB-SECRET",
            hostile_server.url("/ok/over-the-cap")]
    for address in urls:     # one by one: ids in this order
        assert cli("url", "add", address, "-p", "1", env={"MIN_PERIOD": "1"}).returncode == 0
    ids = dict(query(db, "SELECT url, id FROM url"))

    def probes():
        samples = scrape(url)
        found = {dict(labels)["url_id"]: (dict(labels)["url"], value) for (name, labels), value in samples.items()
                 if name == "probe_success"}
        return (found, samples) if len(found) == 3 else None
    found, samples = wait_until(probes, 20, "probe_success for three URLs")
    assert set(found) == {str(i) for i in sorted(ids.values())[:3]}, "the first three URLs by id, no more"
    assert found[str(ids[urls[0]])] == (urls[0], 1.0)
    assert found[str(ids[urls[1]])] == (urls[1], 0.0)
    redacted, _ = found[str(ids[urls[2]])]
    assert "BB-SECRET" not in redacted and redacted.endswith("/ok/secret?***"), redacted
    status = {dict(labels)["url_id"]: value for (name, labels), value in samples.items()
              if name == "probe_http_status_code"}
    assert status[str(ids[urls[1]])] == 503
    assert "BB-SECRET" not in get(url)[1]


def test_readyz_is_503_while_postgresql_is_stopped_and_200_after(owned_pg, owned_dsn, runs):
    """Issue 11, test 4 (on a PostgreSQL the test owns; never the machine's)."""
    run = runs(owned_dsn)
    run.wait_started()
    base = metrics_url(run).removesuffix("/metrics")
    wait_until(lambda: get(f"{base}/readyz")[0] == 200, 10, "/readyz 200")
    owned_pg.stop()
    try:
        assert wait_until(lambda: get(f"{base}/readyz") == (503, "database unreachable\n"), 15,
                          "/readyz 503 while PostgreSQL is stopped")
        assert get(f"{base}/healthz")[0] == 200
        samples = scrape(f"{base}/metrics")     # still served, from the totals in memory
        assert samples[("sitewatch_db_errors_total", (("role", "supervisor"),))] >= 1
    finally:
        owned_pg.start()
    wait_until(lambda: get(f"{base}/readyz") == (200, "ok\n"), 30, "/readyz 200 after PostgreSQL is back")


def test_ecs_lines_parse_as_json_with_the_required_fields(sitewatch, cli, hostile_server):
    """Issue 11, test 6: --log-format ecs, from every process of a run, a crash's traceback included."""
    run = sitewatch("--consumers", "2", global_args=("--log-format", "ecs"))

    def lines():
        return [json.loads(raw) for raw in run.text().splitlines(keepends=True) if raw.endswith("\n")]
    wait_until(lambda: sum(line.get("message") == "consumer started" for line in lines()) == 2, 20,
               "both consumers started")
    import_urls(cli, [{"url": hostile_server.url("/ok/ecs"), "period": 1}])
    code, _ = run.stop(timeout=15)
    assert code == 0
    found = lines()
    assert len(found) == len(run.text().splitlines()), "every line is one JSON object"
    for line in found:
        assert {"@timestamp", "log.level", "message", "ecs.version"} <= set(line), line
        assert line["service"] == {"name": "sitewatch", "version": "0.1.0"}, line
        assert line["process"]["pid"] > 0 and line["host"]["name"], line
        assert not isinstance(line.get("error"), str), "error is an object in ECS"
    assert {line["labels"]["role"] for line in found} >= {"supervisor", "producer", "consumer-1", "consumer-2"}
    running = next(line for line in found if line["message"] == "sitewatch running")
    assert running["sitewatch"]["consumers"] == 2        # our own fields, namespaced
    assert cli("config", "show", env={"SITEWATCH_LOG__FORMAT": "ecs"}).returncode == 0


class FakeSentry:
    """A local HTTP server standing in for Sentry: keeps every envelope posted to it."""

    def __init__(self):
        self.bodies = []
        bodies = self.bodies

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                bodies.append(body.decode("utf-8", "replace"))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.dsn = f"http://publickey@127.0.0.1:{self.server.server_address[1]}/42"

    def events(self) -> list[dict]:
        """The error events received (envelope items of type event), newest last."""
        found = []
        for body in list(self.bodies):
            lines = body.split("\n")
            for header, payload in zip(lines[1::2], lines[2::2], strict=False):
                if json.loads(header).get("type") == "event":
                    found.append(json.loads(payload))
        return found

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_sentry():
    server = FakeSentry()
    yield server
    server.close()


def test_a_consumer_exception_reaches_sentry_with_role_and_release_and_no_secret(
        sitewatch, cli, db, canary_dsns, fake_sentry, hostile_server):
    """Issue 11, test 5: a consumer crashes while it holds a URL with credentials and a token in
    its query string, run with a DSN whose password is a canary; the report names the role and
    release, and no canary survives anywhere in what was sent (frame variables included)."""
    uri, _ = canary_dsns
    run = sitewatch(dsn=uri, env={"SENTRY_DSN": fake_sentry.dsn})
    run.wait_started()
    secret_url = hostile_server.url("/ok/sentry", userinfo=f"alice:{test_secrets.TOKEN}") + \
        f"?key={test_secrets.QUERY_TOKEN}"
    assert cli("url", "add", secret_url, "-p", "1", env={"MIN_PERIOD": "1"}).returncode == 0
    wait_until(lambda: query(db, "SELECT count(*) FROM task_result")[0][0] >= 1, 15, "a first result")
    # A real crash: the result write fails with an error that is not a lost connection, and its
    # message carries the URL with its credentials and token (the consumer re-raises it).
    with db.cursor() as cur:
        cur.execute("""CREATE FUNCTION refuse_result() RETURNS trigger LANGUAGE plpgsql AS $$
                       BEGIN RAISE EXCEPTION 'refused result for %', (SELECT url FROM url WHERE id = NEW.url_id);
                       END $$""")
        cur.execute("CREATE TRIGGER refuse_result BEFORE INSERT ON task_result FOR EACH ROW "
                    "EXECUTE FUNCTION refuse_result()")
    run.wait_for("crashed", role="consumer-1")

    def crash_report():
        return [e for e in fake_sentry.events() if e.get("tags", {}).get("role") == "consumer-1"
                and e.get("exception")]
    event = wait_until(crash_report, 15, "the consumer's crash at the fake Sentry")[0]
    assert event["release"] == "sitewatch@0.1.0"
    assert event["tags"]["host"] == socket.gethostname() and event["server_name"] == socket.gethostname()
    assert event["exception"]["values"][-1]["type"] == "RaiseException"
    sent = "\n".join(fake_sentry.bodies)
    assert "/ok/sentry" in sent and "***@127.0.0.1" in sent, "the URL was in the report, redacted"
    test_secrets.assert_no_canary("what was sent to Sentry", sent)


def test_without_a_dsn_the_sentry_sdk_is_not_even_imported():
    code = ("import sys; from sitewatch import logs; from sitewatch.operations import sentry; "
            "assert sentry.init(None, 'consumer-1') is False; logs.configure('info', 'json', 'consumer-1'); "
            "logs.get().error('boom'); sentry.flush(); assert 'sentry_sdk' not in sys.modules, 'imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_metrics_port_in_use_exits_2_with_one_line_naming_the_address(tmp_path, dsn):
    """Issue 11, test 7."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        done = subprocess.run([sys.executable, "-m", "sitewatch", "run"], capture_output=True, text=True,
                              timeout=60, env=clean_env(tmp_path, DB_DSN=dsn, SITEWATCH_METRICS__LISTEN=address))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and address in lines[0] and "in use" in lines[0], done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize("value", ["9464", "localhost", "127.0.0.1:99999", "::1:9464", "a b:12"])
def test_a_malformed_metrics_listen_is_bad_input(cli, value):
    done = cli("config", "show", env={"SITEWATCH_METRICS__LISTEN": value})
    assert done.returncode == 2 and "metrics.listen" in done.stderr and len(done.stderr.splitlines()) == 1


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
