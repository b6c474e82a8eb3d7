"""Issue 24, web items: A1 (search and passwords with '@'), A2 (Atom links from Host), A6 (warning
for an open public listener), C15 (keyset paging, rate limit of expensive requests), C16 (Unicode
digits). Against the real `sitewatch web` (tests/conftest_web.py) on a small database."""

import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import httpx
import psycopg2
import pytest

from sitewatch.redact import redact_url
from tests.conftest import _fresh_database, clean_env
from tests.conftest_web import WebServer

ATOM = {"a": "http://www.w3.org/2005/Atom"}
# Userinfo with more than one '@': the password runs to the last '@' of the authority.
TRICKY = ["http://alice:pre@SeCrEtPw@example.com/",
          "https://bob:x@y@Zq9Kk77@tricky.example.org/path@public-part?token=Tok3nValue#Fr4gment",
          "http://carol:PaSs0@PaSs1@PaSs2@many.example.net",
          "http://plain.example.com/a@b/c"]
PASSWORD_PIECES = ["SeCrEtPw", "SeCrE", "crEtP", "x@y@Zq9", "Zq9Kk77", "PaSs1", "PaSs2@", "Tok3n", "Fr4gment"]


@pytest.fixture(scope="module")
def small(pg_base_dsn, template_db):
    """A few URLs (some with tricky userinfo), 300 filler URLs, one down, one incident: one
    database for the module (every test only reads it)."""
    for dsn in _fresh_database(pg_base_dsn, "sitewatch_s", template_db):
        db = psycopg2.connect(dsn)
        db.autocommit = True
        try:
            with db.cursor() as cur:
                for url in TRICKY:
                    cur.execute("INSERT INTO url (url, period, timeout, next_check_at) VALUES (%s, 60, 10, now())",
                                (url,))
                cur.execute("INSERT INTO url (url, period, timeout, next_check_at) "
                            "SELECT format('https://filler-%s.example.org/', lpad(n::text, 4, '0')), 60, 10, now() "
                            "FROM generate_series(1, 300) n")
                cur.execute("UPDATE url_state SET state = 'down', since = now() WHERE url_id IN "
                            "(SELECT id FROM url WHERE url IN ('http://plain.example.com/a@b/c', "
                            "'https://filler-0007.example.org/'))")
                cur.execute("INSERT INTO incident (url_id, url, started_at, first_error_kind, first_error, "
                            "last_error_kind, last_error, failed_checks) SELECT id, url, now() - interval '1 hour', "
                            "'connect', 'refused', 'connect', 'refused', 3 FROM url "
                            "WHERE url = 'http://plain.example.com/a@b/c'")
                cur.execute("SELECT id, url FROM url")
                ids = {url: url_id for url_id, url in cur.fetchall()}
        finally:
            db.close()
        yield dsn, ids


@pytest.fixture(scope="module")
def shared(small, tmp_path_factory):
    """One `sitewatch web` on `small` for the tests that only GET with the default settings, the
    rate limit off (they make many uncached requests between them); tests of other settings
    start their own."""
    server = WebServer(tmp_path_factory.mktemp("web"), small[0], {"SITEWATCH_WEB__RATE_LIMIT": "0"})
    yield server
    server.stop()


# --- A1 -----------------------------------------------------------------------------------------------

def test_search_never_sees_any_part_of_a_password(shared):
    web = shared
    for piece in PASSWORD_PIECES:
        found = web.get("/api/v1/urls", params={"q": piece}).json()
        assert found["total"] == 0 and found["items"] == [], (piece, found["items"])
        page = web.get("/", params={"q": piece}).text
        assert all(redact_url(url) not in page for url in TRICKY), piece
    # What is shown can be found, as redact_url shows it (up to its query string).
    for url in TRICKY:
        shown = redact_url(url)
        found = web.get("/api/v1/urls", params={"q": shown.split("?")[0]}).json()
        assert [item["url"] for item in found["items"]] == [shown], url
    assert web.get("/api/v1/urls", params={"q": "/path@public-part"}).json()["total"] == 1
    assert web.get("/api/v1/urls", params={"q": "a@b/c"}).json()["total"] == 1


# --- A2 -----------------------------------------------------------------------------------------------

def _feed_hrefs(text: str) -> list[str]:
    feed = ET.fromstring(text)
    return ([link.get("href") for link in feed.iter("{http://www.w3.org/2005/Atom}link")]
            + [e.text for e in feed.iter("{http://www.w3.org/2005/Atom}id")])


def test_atom_feed_links_never_come_from_the_host_header(small, shared):
    _, ids = small
    web = shared
    poisoned = web.get("/incidents.atom", headers={"Host": "evil.example"})
    assert poisoned.status_code == 200
    assert "evil.example" not in poisoned.text
    after = web.get("/incidents.atom")                        # from the cache, or rendered again
    assert "evil.example" not in after.text
    hrefs = _feed_hrefs(after.text)
    assert f"urls/{ids['http://plain.example.com/a@b/c']}" in hrefs
    assert all("://" not in h for h in hrefs if not h.startswith("urn:")), hrefs


def test_atom_feed_links_use_web_base_url(small, web_factory):
    dsn, ids = small
    web = web_factory(dsn, {"SITEWATCH_WEB__BASE_URL": "https://status.example.com/watch/"})
    text = web.get("/incidents.atom", headers={"Host": "evil.example"}).text
    assert "evil.example" not in text
    hrefs = _feed_hrefs(text)
    assert "https://status.example.com/watch/incidents.atom" in hrefs
    assert f"https://status.example.com/watch/urls/{ids['http://plain.example.com/a@b/c']}" in hrefs
    assert all(h.startswith("https://status.example.com/watch/") for h in hrefs), hrefs


@pytest.mark.serverless
def test_web_base_url_must_be_an_http_url(tmp_path):
    env = clean_env(tmp_path, SITEWATCH_WEB__BASE_URL="javascript:alert(1)")
    done = subprocess.run([sys.executable, "-m", "sitewatch", "config", "show"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "web.base_url" in done.stderr


# --- C16 ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path, status", [
    ("/api/v1/urls?limit=%C2%B2", 400), ("/api/v1/urls?offset=%D9%A3", 400), ("/?page=%C2%B2", 400),
    ("/api/v1/urls?limit=" + "1" * 5000, 400), ("/api/v1/urls/{id}/checks?limit=%C2%B2", 400),
    ("/api/v1/urls/{id}/daily?days=%EF%BC%91", 400), ("/api/v1/incidents?url_id=%C2%B2", 400),
    ("/api/v1/incidents?limit=%C2%B9", 400),
    ("/urls/%C2%B2", 404), ("/api/v1/urls/%C2%B2", 404), ("/api/v1/urls/%D9%A3/uptime", 404),
    ("/badge/%C2%B2/status.svg", 404), ("/badge/%C2%B2/uptime-30d.svg", 404),
    ("/badge/%C2%B2/response-time-24h.svg", 404), ("/api/v1/urls/" + "9" * 5000, 404)])
def test_unicode_digits_are_refused_not_a_server_error(small, shared, path, status):
    _, ids = small
    web = shared
    response = web.get(path.format(id=min(ids.values())))
    assert response.status_code == status, (path, response.text[:200])
    assert "content-security-policy" in response.headers


# --- C15 ----------------------------------------------------------------------------------------------

def test_keyset_paging_walks_every_url_once_in_order(small, shared):
    _, ids = small
    web = shared
    everything = web.get("/api/v1/urls?limit=500").json()["items"]
    assert len(everything) == len(ids)
    walked, after, pages = [], None, 0
    while pages < 20:
        page = web.get("/api/v1/urls", params={"limit": 37, **({"after": after} if after else {})}).json()
        walked += [item["id"] for item in page["items"]]
        after = page["next_after"]
        pages += 1
        if after is None:
            break
    assert walked == [item["id"] for item in everything]            # down first, then by URL; none twice
    assert pages == -(-len(ids) // 37)
    down_only = web.get("/api/v1/urls", params={"state": "down", "limit": 1}).json()
    rest = web.get("/api/v1/urls", params={"state": "down", "limit": 1, "after": down_only["next_after"]}).json()
    assert len(down_only["items"]) == len(rest["items"]) == 1 and rest["next_after"] is None
    for bad in ["x", "d-", "u-abc", "q-5", "d-²"]:
        response = web.get("/api/v1/urls", params={"after": bad})
        assert response.status_code == 400 and "after" in response.json()["error"], bad
    both = web.get("/api/v1/urls", params={"after": "u-1", "offset": 5})
    assert both.status_code == 400


def test_expensive_uncached_requests_are_rate_limited_per_client(small, web_factory):
    dsn, _ = small
    web = web_factory(dsn, {"SITEWATCH_WEB__RATE_LIMIT": "3"})
    assert [web.get("/api/v1/urls", params={"q": f"filler-00{i}"}).status_code for i in range(3)] == [200] * 3
    refused = web.get("/api/v1/urls", params={"q": "filler-004"})
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert "too many" in refused.json()["error"]
    assert web.get("/", params={"q": "filler-005"}).status_code == 429
    assert web.get("/api/v1/urls", params={"offset": 5000}).status_code == 429     # a deep page too
    # Cheap requests are still served.
    assert web.get("/api/v1/urls").status_code == 200
    assert web.get("/api/v1/urls", params={"limit": 50, "after": "u-1"}).status_code == 200
    assert web.get("/").status_code == 200


def test_rate_limit_zero_turns_it_off(shared):
    web = shared                                  # started with web.rate_limit 0
    assert {web.get("/api/v1/urls", params={"q": f"filler-0{i:02d}"}).status_code for i in range(40)} == {200}


# --- A6 -----------------------------------------------------------------------------------------------

def _config_show(tmp_path, **env):
    return subprocess.run([sys.executable, "-m", "sitewatch", "config", "show"], cwd=tmp_path, timeout=30,
                          env=clean_env(tmp_path, **env), capture_output=True, text=True)


@pytest.mark.serverless
@pytest.mark.parametrize("listen", ["0.0.0.0:8080", "[::]:8080", "192.0.2.10:8080", ":8080",
                                    "status.example.com:80"])
def test_config_show_warns_of_an_open_public_listener(tmp_path, listen):
    done = _config_show(tmp_path, SITEWATCH_WEB__LISTEN=listen)
    assert done.returncode == 0
    assert "warning" in done.stderr and "web.auth" in done.stderr and listen in done.stderr
    assert "warning" not in done.stdout


@pytest.mark.serverless
@pytest.mark.parametrize("env", [{"SITEWATCH_WEB__LISTEN": "127.0.0.1:8080"},
                                 {"SITEWATCH_WEB__LISTEN": "[::1]:8080"},
                                 {"SITEWATCH_WEB__LISTEN": "localhost:8080"},
                                 {"SITEWATCH_WEB__LISTEN": ""},
                                 {"SITEWATCH_WEB__LISTEN": "0.0.0.0:8080", "SITEWATCH_WEB__AUTH": "token:abcdef"}])
def test_config_show_is_quiet_for_loopback_or_auth(tmp_path, env):
    done = _config_show(tmp_path, **env)
    assert done.returncode == 0 and done.stderr == ""


def test_web_logs_a_warning_when_it_starts_open_on_a_public_address(small, tmp_path):
    dsn, _ = small
    env = clean_env(tmp_path, DB_DSN=dsn, SITEWATCH_LOG__FORMAT="json")
    proc = subprocess.Popen([sys.executable, "-m", "sitewatch", "web", "--listen", "0.0.0.0:0"], env=env,
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("sitewatch web: serving on "), line
        port = line.strip().rstrip("/").rsplit(":", 1)[1]
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/summary", timeout=10).status_code == 200
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    warnings = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    warnings = [w for w in warnings if w.get("level") == "warning" and "web.auth" in json.dumps(w)]
    assert warnings, err
