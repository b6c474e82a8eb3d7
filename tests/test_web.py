"""The web server: JSON API figures against the raw rows, paging, errors, badges, auth, the CLI.

Real parts only: a seeded PostgreSQL (tests/webseed.py), the real `sitewatch web` (and
`sitewatch run`) as a subprocess on 127.0.0.1, HTTP over real sockets.
"""

import re
import signal
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET

import psutil
import psycopg2
import pytest

from sitewatch.history import histogram
from sitewatch.web import data, svg
from sitewatch.web.pool import ReadOnlyPool
from tests import webseed
from tests.conftest import clean_env
from tests.conftest_web import seed_database, wait_for
from tests.test_run import sitewatch as sitewatch  # noqa: F401  (fixture)

SECRETS = ("s3cret", "abc123", "user:")

# The window starts as sitewatch.history.uptime documents them (the first whole UTC hour inside
# the window), in SQL.
SINCE = {name: f"date_trunc('hour', now() - interval '{length}') + interval '1 hour'"
         for name, length in (("24h", "24 hours"), ("7d", "7 days"), ("30d", "30 days"))}


def truncated(ok, failed):
    return ok * 10 ** 5 // (ok + failed) / 10 ** 5      # history's uptime: 5 decimals, never rounded up


# The tests here only read the seeded data (the cache test changes a row and puts it back): one
# seeded database and one server for the module. A test that writes takes own_seeded.
@pytest.fixture(scope="module")
def seeded(shared_seeded):
    return shared_seeded


@pytest.fixture(scope="module")
def web(shared_web):
    return shared_web


@pytest.fixture
def own_seeded(dsn):
    return seed_database(dsn)


@pytest.fixture
def conn(seeded):
    c = psycopg2.connect(seeded[0])
    c.autocommit = True
    yield c
    c.close()


# --- figures equal a computation from the raw rows ---------------------------------------------------

@pytest.mark.parametrize("name", ["alpha", "beta"])
def test_uptime_windows_equal_the_raw_rows(web, conn, name):
    url_id = web.ids[name]
    body = web.get(f"/api/v1/urls/{url_id}/uptime?windows=24h,7d,30d").json()
    listed = {item["id"]: item for item in web.get("/api/v1/urls?limit=10").json()["items"]}[url_id]
    for window, since in SINCE.items():
        ok, failed = webseed.truth(conn, url_id, since)
        assert ok + failed > 0
        got = body["windows"][window]
        assert (got["ok"], got["failed"]) == (ok, failed), window
        assert got["uptime"] == truncated(ok, failed)
        assert listed[f"uptime_{window}"] == truncated(ok, failed)       # the list shows the same figure
    # 30 days of data, but raw rows only for the last 7: the 30 d figure needed the rollups.
    assert body["windows"]["30d"]["ok"] > 4 * body["windows"]["7d"]["ok"]


def test_lost_results_count_neither_as_up_nor_as_down(web, conn):
    url_id = web.ids["alpha"]
    got = web.get(f"/api/v1/urls/{url_id}/uptime?windows=7d").json()["windows"]["7d"]
    with conn.cursor() as cur:
        cur.execute(f"SELECT count(*), count(*) FILTER (WHERE error_kind = 'lost') FROM seed_raw "
                    f"WHERE url_id = %s AND scheduled_at >= {SINCE['7d']}", (url_id,))
        all_rows, lost = cur.fetchone()
    assert lost > 0                                   # the seed has lost slots in every week
    assert got["ok"] + got["failed"] == all_rows - lost     # the monitor's failures are not the site's


def test_daily_bars_equal_the_raw_rows_per_day(web, conn):
    url_id = web.ids["alpha"]
    days = web.get(f"/api/v1/urls/{url_id}/daily?days=90").json()["days"]
    assert len(days) == 90
    with conn.cursor() as cur:
        cur.execute("SELECT (scheduled_at AT TIME ZONE 'UTC')::date, count(*) FILTER (WHERE ok), "
                    "count(*) FILTER (WHERE NOT ok AND error_kind <> 'lost') FROM seed_raw WHERE url_id = %s "
                    "GROUP BY 1", (url_id,))
        truth = {d.isoformat(): (ok, failed) for d, ok, failed in cur.fetchall()}
    for day in days:
        ok, failed = truth.get(day["date"], (0, 0))
        assert (day["ok"], day["failed"]) == (ok, failed), day["date"]
        assert day["uptime"] == (truncated(ok, failed) if ok + failed else None)
    assert sum(1 for d in days if d["uptime"] is not None) == 31      # 30 days back plus today


def test_hourly_chart_equals_the_raw_rows_per_hour(web, conn):
    # The 24 h chart reads rollup_hour (history's histogram layout) and the raw rows after the
    # hour watermark: per hour, the counts and percentiles of the raw rows themselves.
    url_id = web.ids["alpha"]
    with conn.cursor() as cur:
        cur.execute("SELECT date_trunc('hour', scheduled_at, 'UTC'), count(*) FILTER (WHERE ok), "
                    "count(*) FILTER (WHERE NOT ok AND error_kind <> 'lost'), array_agg(response_time_ms) "
                    "FROM seed_raw "
                    f"WHERE url_id = %s AND scheduled_at >= {SINCE['24h']} GROUP BY 1 ORDER BY 1", (url_id,))
        truth = cur.fetchall()
        cur.execute("SELECT done_until FROM rollup_watermark WHERE level = 'hour'")
        hour_until = cur.fetchone()[0]
    assert truth[0][0] < hour_until                  # some hours come from the rollups
    got = data.hourly(conn, url_id, 24)
    assert [(h["hour"], h["ok"], h["failed"]) for h in got] == [(t[0], t[1], t[2]) for t in truth]
    for hour, (*_, times) in zip(got, truth, strict=True):
        hist = histogram.from_values(times)
        assert (hour["p50_ms"], hour["p95_ms"]) == (histogram.percentile(hist, 0.5), histogram.percentile(hist, 0.95))


def test_p95_is_within_a_histogram_bucket_of_the_raw_rows(web, conn):
    url_id = web.ids["alpha"]
    p95 = web.get(f"/api/v1/urls/{url_id}").json()["p95_ms_24h"]
    with conn.cursor() as cur:
        cur.execute(f"SELECT percentile_disc(0.95) WITHIN GROUP (ORDER BY response_time_ms) FROM seed_raw "
                    f"WHERE url_id = %s AND scheduled_at >= {SINCE['24h']}", (url_id,))
        exact = cur.fetchone()[0]
    assert abs(p95 - exact) / exact < 0.1


# --- paging, filters, errors ----------------------------------------------------------------------------

def test_paging_limits_hold_and_pages_cover_every_url_once(web):
    first = web.get("/api/v1/urls?limit=100").json()
    total = first["total"]
    assert total == 3 + webseed.FILLER and len(first["items"]) == 100
    assert first["items"][0]["id"] == web.ids["beta"] and first["items"][0]["state"] == "down"
    seen = []
    for offset in range(0, total + 100, 100):
        page = web.get(f"/api/v1/urls?limit=100&offset={offset}").json()
        assert len(page["items"]) == max(0, min(100, total - offset))
        seen += [item["id"] for item in page["items"]]
    assert len(seen) == len(set(seen)) == total
    rest = [item["url"] for item in web.get("/api/v1/urls?limit=500").json()["items"][1:]]
    assert rest == sorted(rest)                       # down first, then by URL
    assert web.get("/api/v1/urls?limit=501").status_code == 400


def test_state_filter_and_search(web):
    down = web.get("/api/v1/urls?state=down").json()
    assert [i["id"] for i in down["items"]] == [web.ids["beta"]] and down["total"] == 1
    unknown = web.get("/api/v1/urls?state=unknown").json()
    assert [i["id"] for i in unknown["items"]] == [web.ids["gamma"]]
    assert web.get("/api/v1/urls?q=site-00").json()["total"] == 99
    assert web.get("/api/v1/urls?q=BETA.example").json()["total"] == 1
    # The search sees only what the page shows: no probing for a secret in a query string.
    assert web.get("/api/v1/urls?q=abc123").json()["total"] == 0
    assert web.get("/api/v1/urls?q=s3cret").json()["total"] == 0
    assert web.get("/api/v1/urls?q=100%25").json()["total"] == 0       # % is literal, not a wildcard


@pytest.mark.parametrize("path", ["/api/v1/urls/999999", "/api/v1/urls/999999/checks",
                                  "/api/v1/urls/999999/uptime", "/api/v1/urls/999999/daily",
                                  "/api/v1/urls/abc", "/api/v1/urls/99999999999999999999999",
                                  "/api/v1/nothing"])
def test_unknown_id_is_404_with_a_json_error(web, path):
    response = web.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]


@pytest.mark.parametrize("path", ["/api/v1/urls?limit=0", "/api/v1/urls?limit=abc", "/api/v1/urls?offset=-1",
                                  "/api/v1/urls?state=sideways", "/api/v1/urls?q=" + "x" * 201,
                                  "/api/v1/urls/{id}/uptime?windows=2h", "/api/v1/urls/{id}/daily?days=0",
                                  "/api/v1/urls/{id}/daily?days=367", "/api/v1/urls/{id}/checks?limit=1001",
                                  "/api/v1/urls/{id}/checks?before=yesterday", "/api/v1/incidents?open=maybe",
                                  "/api/v1/incidents?url_id=x", "/api/v1/incidents?limit=501"])
def test_bad_parameters_are_400_with_a_json_error(web, path):
    response = web.get(path.format(id=web.ids["alpha"]))
    assert response.status_code == 400, path
    assert "must" in response.json()["error"]


def test_checks_are_newest_first_and_page_with_before(web):
    url_id = web.ids["beta"]
    first = web.get(f"/api/v1/urls/{url_id}/checks?limit=5").json()
    assert len(first["items"]) == 5
    slots = [c["scheduled_at"] for c in first["items"]]
    assert slots == sorted(slots, reverse=True)
    assert first["items"][0]["error_kind"] == "connect"
    second = web.get(f"/api/v1/urls/{url_id}/checks", params={"limit": 5, "before": first["next_before"]}).json()
    assert second["items"][0]["scheduled_at"] < slots[-1]


def test_summary_and_incidents(web):
    summary = web.get("/api/v1/summary").json()
    assert (summary["urls"], summary["down"], summary["unknown"], summary["open_incidents"]) == \
        (3 + webseed.FILLER, 1, 1, 1)
    assert summary["last_result_slot"] is not None
    items = web.get("/api/v1/incidents").json()["items"]
    assert items[0]["ended_at"] is None and items[0]["url_id"] == web.ids["beta"]       # open first
    assert {"url", "started_at", "ended_at", "first_error_kind", "first_error", "last_error_kind",
            "last_error", "failed_checks"} <= set(items[0])
    closed = web.get("/api/v1/incidents?open=false").json()["items"]
    assert [i["duration_s"] for i in closed] == [1800, 720]
    assert closed[1]["url"] is None                                  # its URL was removed
    assert web.get(f"/api/v1/incidents?url_id={web.ids['alpha']}").json()["items"][0]["failed_checks"] == 3


def test_secrets_in_urls_never_appear(web):
    beta = web.ids["beta"]
    for path in ["/", f"/urls/{beta}", "/incidents", "/incidents.atom", "/api/v1/urls?limit=500",
                 f"/api/v1/urls/{beta}", "/api/v1/incidents", "/?q=beta"]:
        text = web.get(path).text
        assert "beta.example.com" in text, path
        for secret in SECRETS:
            assert secret not in text, (path, secret)


# --- pages -----------------------------------------------------------------------------------------------

def test_pages_are_self_contained_and_small(web):
    for path in ["/", f"/urls/{web.ids['alpha']}", f"/urls/{web.ids['beta']}", "/incidents",
                 "/?state=down", "/?q=site&page=2"]:
        response = web.get(path)
        assert response.status_code == 200, path
        assert len(response.content) < 200_000, path
        # Nothing loaded from anywhere: no src= or stylesheet link, and the CSP forbids it anyway.
        assert not re.search(r'<(script|img|link|iframe)[^>]+(src|href)="(?!data:)', response.text), path
        assert "default-src 'none'" in response.headers["content-security-policy"]
    detail = web.get(f"/urls/{web.ids['alpha']}").text
    assert detail.count('<rect class="d-') == 90 and 'class="chart"' in detail
    index = web.get("/").text
    assert index.index("beta.example.com") < index.index("alpha.example.com")
    assert web.get("/?page=3").text.count('<tr data-state=') == 43
    assert web.get("/urls/999999").status_code == 404
    assert web.get("/?page=0").status_code == 400


def test_a_cached_response_is_the_same_response(web, conn):
    beta = web.ids["beta"]
    path = "/?state=down&q=beta"           # a key no other test asks for: the first request renders
    first = web.get(path)
    assert "beta.example.com" in first.text
    with conn.cursor() as cur:
        cur.execute("UPDATE url_state SET state = 'up' WHERE url_id = %s", (beta,))
        try:
            second = web.get(path)         # within app.CACHE_SECONDS: the cached page, beta still down
            fresh = web.get(path + "&page=1")
        finally:
            cur.execute("UPDATE url_state SET state = 'down' WHERE url_id = %s", (beta,))
    assert "beta.example.com" not in fresh.text, "the change shows on a page rendered now"
    assert first.content == second.content
    for response in (first, second):
        assert len(response.headers.get_list("content-security-policy")) == 1
        assert len(response.headers.get_list("content-length")) == 1


def test_atom_feed_is_well_formed(web):
    response = web.get("/incidents.atom")
    assert response.headers["content-type"].startswith("application/atom+xml")
    feed = ET.fromstring(response.content)
    ns = {"a": "http://www.w3.org/2005/Atom"}
    titles = [e.findtext("a:title", namespaces=ns) for e in feed.findall("a:entry", ns)]
    assert len(titles) == 3
    assert titles[0].startswith("Down: https://***@beta.example.com/status")
    assert any(t.startswith("Resolved: https://alpha.example.com/ after 30 min") for t in titles)


# --- badges ---------------------------------------------------------------------------------------------

def _badge_text(response) -> list[str]:
    root = ET.fromstring(response.content)                        # well-formed XML, or this raises
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]


def test_badges_are_svg_with_the_right_figure_and_short_caching(web):
    alpha, beta = web.ids["alpha"], web.ids["beta"]
    info = web.get(f"/api/v1/urls/{alpha}").json()
    cases = {f"/badge/{beta}/status.svg": ["status", "down"],
             f"/badge/{alpha}/status.svg": ["status", "up"],
             f"/badge/{web.ids['gamma']}/status.svg": ["status", "unknown"],
             f"/badge/{alpha}/uptime-30d.svg": ["uptime 30d", svg.pct(info["uptime_30d"])],
             f"/badge/{alpha}/response-time-24h.svg": ["p95 24h", svg.ms(info["p95_ms_24h"])]}
    for path, texts in cases.items():
        response = web.get(path)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("image/svg+xml")
        assert response.headers["cache-control"] == "public, max-age=60"
        assert _badge_text(response) == texts, path
    assert re.fullmatch(r"\d+\.\d\d%", svg.pct(info["uptime_30d"]))
    missing = web.get("/badge/999999/status.svg")
    assert missing.status_code == 404 and _badge_text(missing) == ["status", "not found"]


def test_percent_is_truncated_never_rounded_up():
    assert svg.pct(0.99999) == "99.99%"
    assert svg.pct(1.0) == "100.00%"
    assert svg.pct(None) == "–"


# --- read-only, access control, framing ------------------------------------------------------------------

def test_the_web_connections_cannot_write(seeded):
    pool = ReadOnlyPool(seeded[0], 5)
    with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):
        with pool.connection() as conn, conn.cursor() as cur:
            cur.execute("DELETE FROM url")
    with pool.connection() as conn, conn.cursor() as cur:     # the pool still works afterwards
        cur.execute("SELECT count(*) FROM url")
        assert cur.fetchone()[0] == 3 + webseed.FILLER
    pool.close()


def test_auth_token_and_basic_users_with_public_badges(seeded, web_factory):
    dsn, ids = seeded
    server = web_factory(dsn, {"SITEWATCH_WEB__AUTH": "token:t0ken-xyz basic:alice:pw-alice basic:bob:pw-bob"})
    for path in ["/", f"/urls/{ids['alpha']}", "/api/v1/summary", "/incidents.atom"]:
        refused = server.get(path)
        assert refused.status_code == 401, path
        assert refused.headers["www-authenticate"].startswith("Basic")
        assert server.get(path, headers={"Authorization": "Bearer t0ken-xyz"}).status_code == 200
        assert server.get(path, auth=("alice", "pw-alice")).status_code == 200
        assert server.get(path, auth=("bob", "pw-bob")).status_code == 200
        assert server.get(path, auth=("alice", "pw-bob")).status_code == 401
        assert server.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert server.get("/api/v1/summary").json() == {"error": "authentication required"}
    assert server.get(f"/badge/{ids['beta']}/status.svg").status_code == 200       # badges stay open


def test_a_chosen_public_page(seeded, web_factory):
    dsn, ids = seeded
    server = web_factory(dsn, {"SITEWATCH_WEB__AUTH": "token:t0ken", "SITEWATCH_WEB__PUBLIC": "/,/badge/*"})
    assert server.get("/").status_code == 200
    assert server.get(f"/badge/{ids['beta']}/uptime-30d.svg").status_code == 200
    assert server.get(f"/urls/{ids['beta']}").status_code == 401
    assert server.get("/api/v1/urls").status_code == 401


def test_framing_is_denied_by_default_and_configurable(seeded, web_factory):
    dsn, _ = seeded
    default = web_factory(dsn).get("/")
    assert "frame-ancestors 'none'" in default.headers["content-security-policy"]
    assert default.headers["x-frame-options"] == "DENY"
    allowed = web_factory(dsn, {"SITEWATCH_WEB__FRAME_ANCESTORS": "'self' https://intranet.example.com"}).get("/")
    assert "frame-ancestors 'self' https://intranet.example.com" in allowed.headers["content-security-policy"]
    assert "x-frame-options" not in allowed.headers


def test_config_show_redacts_web_auth(tmp_path):
    env = clean_env(tmp_path, SITEWATCH_WEB__AUTH="token:t0ken-xyz basic:alice:pw-alice")
    done = subprocess.run([sys.executable, "-m", "sitewatch", "config", "show"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    line = [x for x in done.stdout.splitlines() if x.startswith("web.auth")][0]
    assert "token:*** basic:alice:***" in line
    assert "t0ken-xyz" not in done.stdout + done.stderr and "pw-alice" not in done.stdout + done.stderr
    bad = subprocess.run([sys.executable, "-m", "sitewatch", "config", "show"], cwd=tmp_path, timeout=30,
                         env={**env, "SITEWATCH_WEB__AUTH": "secret-without-kind"}, capture_output=True, text=True)
    assert bad.returncode == 2 and "web.auth" in bad.stderr and "secret-without-kind" not in bad.stderr


# --- the command line --------------------------------------------------------------------------------------

def _web_command(tmp_path, dsn, *args):
    return subprocess.run([sys.executable, "-m", "sitewatch", "web", *args], cwd=tmp_path, timeout=30,
                          env=clean_env(tmp_path, DB_DSN=dsn), capture_output=True, text=True)


def test_address_in_use_exits_2_with_one_line(seeded, tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        done = _web_command(tmp_path, seeded[0], "--listen", f"127.0.0.1:{port}")
    finally:
        taken.close()
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"sitewatch: error: web.listen 127.0.0.1:{port}: "
                                                f"address already in use"]


def test_connections_on_the_bound_socket_send_without_delay():
    """asyncio sets TCP_NODELAY on an accepted socket only when its proto says TCP; without it a
    keep-alive response (headers, then body: two writes) waited ~40 ms for a delayed ACK."""
    import asyncio

    from sitewatch.web import server
    sock = server.bind("127.0.0.1:0")
    port = sock.getsockname()[1]

    async def accept_one():
        accepted = asyncio.get_running_loop().create_future()

        class Record(asyncio.Protocol):
            def connection_made(self, transport):
                raw = transport.get_extra_info("socket")
                accepted.set_result(raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()
        listener = await asyncio.get_running_loop().create_server(Record, sock=sock)
        async with listener:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            nodelay = await asyncio.wait_for(accepted, 10)
            writer.close()
        return nodelay
    assert asyncio.run(accept_one()) != 0


@pytest.mark.parametrize("listen", ["nonsense", "127.0.0.1:99999", ":8080x"])
def test_bad_listen_address_exits_2(tmp_path, dsn, listen):
    done = _web_command(tmp_path, dsn, "--listen", listen)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "web.listen" in done.stderr


def test_sigterm_stops_the_web_server_with_exit_0(seeded, web_factory):
    web = web_factory(seeded[0])
    assert web.get("/api/v1/summary").status_code == 200
    assert web.stop() == 0


def test_sitewatch_run_supervises_a_web_child(own_seeded, tmp_path):     # its run checks and writes
    dsn, ids = own_seeded
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    env = clean_env(tmp_path, DB_DSN=dsn, SITEWATCH_WEB__LISTEN=f"127.0.0.1:{port}",
                    SITEWATCH_CONSUMER__PROCESSES=1, SITEWATCH_LOG__FORMAT="json")
    proc = subprocess.Popen([sys.executable, "-m", "sitewatch", "run"], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        import httpx

        def summary():
            try:
                return httpx.get(f"http://127.0.0.1:{port}/api/v1/summary", timeout=2).json()
            except httpx.HTTPError:
                return None
        body = wait_for(summary, timeout=30)
        assert body and body["down"] == 1
        titles = [" ".join(p.cmdline()) for p in psutil.Process(proc.pid).children()]
        assert any(t.startswith("sitewatch: web") for t in titles), titles
        web_child = next(p for p in psutil.Process(proc.pid).children()
                         if " ".join(p.cmdline()).startswith("sitewatch: web"))
        web_child.kill()                                 # a dead web child is restarted
        assert wait_for(lambda: summary() and not web_child.is_running(), timeout=30)
        second = next(p for p in psutil.Process(proc.pid).children()
                      if " ".join(p.cmdline()).startswith("sitewatch: web"))
        proc.send_signal(signal.SIGHUP)                  # the replacement takes the port over
        assert wait_for(lambda: summary() and not second.is_running(), timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=40)
    assert proc.returncode == 0, err[-2000:]
    assert "web server stopped" in err
    assert "web server cannot start" not in err


def test_a_web_child_whose_port_is_taken_gives_up_without_stopping_checks_and_starts_once_free(
        sitewatch, cli, dsn, hostile_server):
    """Recovery path (issue 25 §4.5): web.listen taken by another process. The web child retries
    for the grace period and a little more, then exits with one error line; checking goes on;
    the supervisor restarts it, and once the port is free it serves."""
    from tests.test_run import import_urls, scalar
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        import_urls(cli, [{"url": hostile_server.url("/ok/web-port"), "period": 1}])
        run = sitewatch(env={"SITEWATCH_WEB__LISTEN": f"127.0.0.1:{port}"})
        run.wait_started()
        failed = run.wait_for("web server cannot start", role="web", timeout=30)[0]
        assert "in use" in failed["error"], failed
        db = psycopg2.connect(dsn)
        db.autocommit = True
        try:
            checked = scalar(db, "SELECT count(*) FROM task_result")
            assert wait_for(lambda: scalar(db, "SELECT count(*) FROM task_result") >= checked + 2, timeout=15), \
                "checking stopped while the web child could not start"
        finally:
            db.close()
        assert not run.events("web server listening")
    finally:
        taken.close()
    run.wait_for("web server listening", role="web", timeout=60)
    import httpx
    assert httpx.get(f"http://127.0.0.1:{port}/api/v1/summary", timeout=10).status_code == 200


def test_the_web_answers_503_while_the_database_is_down_and_recovers(owned_pg, owned_dsn, web_factory, tmp_path):
    """Recovery path (issue 25 §4.5): PostgreSQL stopped under a running web server: a JSON 503,
    not a 500 or a hang, and pages again once it is back, without a restart."""
    from tests.conftest import cli_for
    assert cli_for(tmp_path, owned_dsn)("db", "migrate").returncode == 0
    server = web_factory(owned_dsn)
    assert server.get("/api/v1/summary").status_code == 200
    owned_pg.stop()
    try:
        down = server.get("/api/v1/urls?limit=5")          # not cached: another key than above
        assert down.status_code == 503, down.text
        assert "database" in down.json()["error"], down.text
        assert server.get("/").status_code == 503
    finally:
        owned_pg.start()
    assert wait_for(lambda: server.get("/api/v1/urls?limit=6").status_code == 200, timeout=30)
    assert server.proc.poll() is None
