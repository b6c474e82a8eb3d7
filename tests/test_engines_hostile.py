"""The differential suite: the hostile-target and hardening cases of the check, once per engine.

Each case must give the same `ok` and `error_kind` on both engines (issue 23).
The messages may differ (libcurl words its errors itself); what the urllib3
engine's messages say is tested in test_probe.py.
"""

import base64
import json
import re
import socket
import subprocess
import sys

import pytest

from sitewatch.check import curl_engine, tls
from sitewatch.check.engine import MAX_ERROR_CHARS
from sitewatch.check.probe import Target, check, format_outcome
from tests.test_engines import engine  # noqa: F401  (the fixture: one run per engine)
from tests.test_probe import _trusting, expired_tls_server, tls_server  # noqa: F401  (fixtures)

pytestmark = pytest.mark.serverless

TIMEOUT = 1.0

# (path, Target keywords, ok, error_kind)
CASES = [
    ("/ok", {"regex": r"hello \w+"}, True, None),
    ("/echo-headers", {"regex": r"(?i)user-agent: sitewatch/"}, True, None),
    ("/echo-headers", {"regex": "(?i)connection: close"}, True, None),
    ("/echo-headers", {"regex": "(?i)accept-encoding: .*gzip"}, True, None),
    ("/echo-headers", {"regex": "(?i)^accept:"}, False, "regex"),  # libcurl's default Accept is not sent
    ("/gzip", {"regex": "hello sitewatch"}, True, None),
    ("/ok", {"method": "HEAD"}, True, None),
    ("/ok", {"method": "HEAD", "regex": "hello"}, False, "regex"),
    ("/big/1000", {"max_body_bytes": 1000}, True, None),
    ("/status/503", {}, False, "status"),
    ("/status/404", {"expected_status": ((404, 404), (500, 599))}, True, None),
    ("/ok", {"regex": "Welcome"}, False, "regex"),
    ("/status/500", {"regex": "status 500"}, False, "status"),
    ("/ok", {"regex": "(unclosed"}, False, "regex"),
    ("/non-utf8", {"regex": "caf. .*text$"}, True, None),
    ("/regex-bomb", {"regex": "(a+)+$"}, False, "regex"),
    # the total deadline
    ("/hang", {}, False, "timeout"),
    ("/dribble-headers", {}, False, "timeout"),
    ("/dribble-body", {}, False, "timeout"),
    ("/slow/10", {}, False, "timeout"),
    ("/dribble-gzip", {}, False, "timeout"),
    ("/slow/0.2", {}, True, None),
    # bodies
    ("/endless", {}, False, "body_too_large"),
    ("/gzip-bomb", {"timeout": 10}, False, "body_too_large"),
    ("/deflate-empty-blocks", {"timeout": 10}, False, "body_too_large"),
    ("/gzip", {"max_body_bytes": 10}, False, "body_too_large"),
    ("/truncated-gzip", {"regex": "hello"}, False, "protocol"),
    ("/truncated-deflate", {"regex": "hello"}, False, "protocol"),
    ("/deflate/raw", {"regex": "^hello sitewatch"}, True, None),
    ("/deflate/zlib", {"regex": "^hello sitewatch"}, True, None),
    ("/gzip-members", {"regex": "^hello sitewatch"}, True, None),
    ("/interim/103", {"regex": "hello"}, True, None),
    ("/interim/102", {"regex": "hello"}, True, None),
    ("/interim/100,103,103", {"regex": "hello"}, True, None),
    # redirects
    ("/redirect/5", {"regex": "hello"}, True, None),
    ("/redirect/6", {}, False, "redirects"),
    ("/redirect/1", {"max_redirects": 0}, False, "redirects"),
    ("/redirect-loop", {}, False, "redirects"),
    ("/redirect-to?http://[::1/x", {}, False, "redirects"),
    ("/redirect-to?http://127.0.0.1:0/ok", {}, False, "redirects"),
    ("/redirect-to?http://127.0.0.1:99999/ok", {}, False, "redirects"),
    ("/redirect-to?ftp://files.example/x", {}, False, "redirects"),
    # not quite HTTP
    ("/close-early", {}, False, "protocol"),
    ("/not-http", {}, False, "protocol"),
    ("/huge-header", {}, False, "protocol"),
    ("/many-headers", {}, False, "protocol"),
    ("/truncated-body", {}, False, "protocol"),
    ("/bad-gzip", {}, False, "protocol"),
    ("/echo-request-line", {}, False, "protocol"),
]


@pytest.mark.parametrize(("path", "options", "ok", "kind"), CASES, ids=[f"{c[0]}{c[1] or ''}" for c in CASES])
def test_hostile_case(engine, hostile_server, path, options, ok, kind):  # noqa: F811
    outcome = check(Target(hostile_server.url(path), **{"timeout": TIMEOUT, **options}), engine)
    assert (outcome.ok, outcome.error_kind) == (ok, kind), outcome
    assert (outcome.error is None) == ok
    if kind in ("timeout", "dns", "connect", "tls", "redirects", "protocol", "body_too_large"):
        assert outcome.response_time_ms is None


def test_a_header_line_without_a_colon_is_the_one_documented_difference(engine, hostile_server):  # noqa: F811
    # README "Check engines": http.client skips such a line; libcurl refuses the response.
    outcome = check(Target(hostile_server.url("/bad-header-line"), timeout=TIMEOUT), engine)
    expected = {"urllib3": (True, None, 200), "curl": (False, "protocol", 200)}[engine.name]
    assert (outcome.ok, outcome.error_kind, outcome.status_code) == expected, outcome


NUL_IN_HEAD = {  # tests/test_faults.py's odd replies with a NUL byte in the status line or a header
    "/nul-reason": None, "/nul-header": None, "/binary-header-name": None, "/bad-charset": None,
    "/folded-headers": None, "/binary-reason": "status", "/nul-location": "status", "/binary-location": "redirects",
}


@pytest.fixture(scope="module")
def odd_server():
    from tests.test_faults import ODD_ROUTES, OddServer
    server = OddServer(ODD_ROUTES)
    yield server
    server.close()


@pytest.mark.parametrize(("path", "urllib3_kind"), NUL_IN_HEAD.items())
def test_a_nul_byte_in_the_head_is_protocol_on_curl_only(engine, odd_server, path, urllib3_kind):  # noqa: F811
    # README "Check engines": libcurl refuses a response whose head holds a NUL byte.
    outcome = check(Target(odd_server.url(path), timeout=3, regex="sitewatch"), engine)
    assert outcome.error_kind == ("protocol" if engine.name == "curl" else urllib3_kind), outcome
    if engine.name == "curl":
        assert "waiting for the response" in outcome.error


def test_statuses_and_messages_that_both_engines_share(engine, hostile_server):  # noqa: F811
    dribbled = check(Target(hostile_server.url("/dribble-body"), timeout=TIMEOUT), engine)
    assert dribbled.status_code == 200 and "reading the body" in dribbled.error
    assert dribbled.error.startswith("timed out after 1.0 s (total deadline)")
    too_many = check(Target(hostile_server.url("/redirect/6")), engine)
    assert too_many.status_code == 302 and too_many.error.startswith("more than 5 redirects (last: http://")
    endless = check(Target(hostile_server.url("/endless"), timeout=5), engine)
    assert endless.status_code == 200 and endless.error == "body exceeds 1048576 bytes"
    assert "ends early" in check(Target(hostile_server.url("/truncated-gzip")), engine).error
    assert "unsupported URL scheme 'ftp'" in check(Target(hostile_server.url("/redirect-to?ftp://x/")), engine).error
    assert check(Target(hostile_server.url("/status/503")), engine).error == "HTTP 503, expected 200-399"
    hop = check(Target(hostile_server.url("/redirect-to?" + hostile_server.url("/hang")), timeout=TIMEOUT), engine)
    assert hop.error_kind == "timeout"  # the deadline covers every hop


@pytest.mark.parametrize(("userinfo", "sent"), [
    ("alice:s3cret", "alice:s3cret"),
    ("u:%E2%82%ACuro", "u:\u20acuro"),
    ("u:caf\u00e9", "u:caf\u00e9"),
    ("user", "user:"),
    ("us%3Aer:p%40ss", "us:er:p@ss"),
])
def test_userinfo_is_sent_as_utf8_basic_auth(engine, hostile_server, userinfo, sent):  # noqa: F811
    expected = base64.b64encode(sent.encode("utf-8")).decode()
    outcome = check(Target(hostile_server.url("/echo-headers", userinfo=userinfo),
                           regex=f"(?i)authorization: Basic {re.escape(expected)}\r?\n"), engine)
    assert outcome.ok, outcome


def test_an_empty_userinfo_sends_no_authorization(engine, hostile_server):  # noqa: F811
    url = hostile_server.url("/echo-headers").replace("://", "://@")
    outcome = check(Target(url, regex="(?i)authorization"), engine)
    assert outcome.status_code == 200 and outcome.regex_matched is False


def test_userinfo_never_follows_a_redirect_to_another_host(engine, hostile_server):  # noqa: F811
    other = hostile_server.url("/echo-headers").replace("127.0.0.1", "localhost")
    outcome = check(Target(hostile_server.url(f"/redirect-to?{other}", userinfo="alice:s3cret"),
                           regex="(?i)authorization"), engine)
    assert outcome.status_code == 200 and outcome.regex_matched is False


def test_userinfo_follows_a_same_host_redirect_to_https_but_never_back(engine, hostile_server, tls_server):  # noqa: F811
    url = hostile_server.url("/redirect-to?" + tls_server.url("/echo-headers"), userinfo="alice:s3cret")
    outcome = check(Target(url, verify_tls=False, regex="(?i)authorization: Basic YWxpY2U6czNjcmV0"), engine)
    assert outcome.ok, outcome
    down = tls_server.url("/redirect-to?" + hostile_server.url("/echo-headers"), userinfo="alice:s3cret")
    outcome = check(Target(down, verify_tls=False, regex="(?i)authorization"), engine)
    assert outcome.status_code == 200 and outcome.regex_matched is False


def test_connection_refused_is_connect(engine):  # noqa: F811
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    outcome = check(Target(f"http://127.0.0.1:{port}/", timeout=TIMEOUT), engine)
    assert (outcome.ok, outcome.error_kind) == (False, "connect")
    assert "refused" in outcome.error


def test_unresolvable_host_is_dns(engine):  # noqa: F811
    try:
        socket.getaddrinfo("nonexistent.invalid", 80)
    except socket.gaierror:
        pass
    outcome = check(Target("http://nonexistent.invalid/", timeout=3), engine)
    if outcome.error_kind == "timeout":
        pytest.skip("the system resolver does not fail fast here")
    assert outcome.error_kind == "dns" and "nonexistent.invalid" in outcome.error


@pytest.mark.parametrize("url", ["ftp://example.invalid/file", "http:///nohost", "http://127.0.0.1:0/"])
def test_a_bad_url_is_protocol(engine, url):  # noqa: F811
    outcome = check(Target(url), engine)
    assert (outcome.ok, outcome.error_kind) == (False, "protocol")


# --------------------------------------------------------------------------- secrets


@pytest.mark.parametrize("path", [
    "/redirect-loop?token=secret", "/redirect/9?token=secret", "/echo-request-line?token=secret",
    "/status/503?token=secret", "/hang?token=secret",
])
def test_errors_never_show_userinfo_or_query(engine, hostile_server, path):  # noqa: F811
    target = Target(hostile_server.url(path, userinfo="user:secret"), timeout=TIMEOUT)
    outcome = check(target, engine)
    assert not outcome.ok
    assert "secret" not in outcome.error and "user:" not in outcome.error
    assert "secret" not in format_outcome(target, outcome)


def test_a_secret_is_redacted_before_the_message_is_cut(engine, hostile_server):  # noqa: F811
    path = f"/echo-request-line?pad={'p' * 150}&token=tok{'CANARY' * 5}"
    outcome = check(Target(hostile_server.url(path)), engine)
    assert outcome.error_kind == "protocol" and "CANARY" not in outcome.error


def test_the_basic_auth_value_is_redacted(engine, hostile_server):  # noqa: F811
    outcome = check(Target(hostile_server.url("/echo-auth-line", userinfo="alice:s3cret")), engine)
    assert outcome.error_kind == "protocol"
    assert "YWxpY2U6czNjcmV0" not in outcome.error


def test_a_short_password_does_not_garble_messages(engine, hostile_server):  # noqa: F811
    outcome = check(Target(hostile_server.url("/status/401", userinfo="user:0")), engine)
    assert outcome.error == "HTTP 401, expected 200-399"


@pytest.mark.parametrize("path", [f"/redirect-to?/{'a' * 60_000}", f"/echo-request-line?{'b' * 60_000}"])
def test_every_error_is_short_whatever_the_server_sends(engine, hostile_server, path):  # noqa: F811
    outcome = check(Target(hostile_server.url(path), max_redirects=0), engine)
    assert not outcome.ok and len(outcome.error) <= MAX_ERROR_CHARS


# --------------------------------------------------------------------------- TLS


@pytest.fixture
def trust(engine, monkeypatch):  # noqa: F811
    """Make `engine` trust a CA file, as if a real CA had issued the test certificates."""
    def trusting(cafile):
        monkeypatch.setattr(tls, "ssl_context", _trusting(cafile))
        monkeypatch.setattr(curl_engine, "ca_paths", lambda: (cafile, None))
    return trusting


def test_self_signed_cert_fails_verification_with_its_days(engine, tls_server):  # noqa: F811
    outcome = check(Target(tls_server.url("/ok"), timeout=TIMEOUT), engine)
    assert outcome.error_kind == "tls" and "certificate verify failed" in outcome.error
    assert outcome.cert_days_left in (29, 30)


def test_an_expired_certificate_records_negative_days_left(engine, expired_tls_server, trust):  # noqa: F811
    trust(expired_tls_server.cafile)
    outcome = check(Target(expired_tls_server.url("/ok"), timeout=TIMEOUT), engine)
    assert outcome.error_kind == "tls" and "certificate has expired" in outcome.error
    assert outcome.cert_days_left in (-4, -3)


def test_verified_cert_reports_days_left_and_tls_time(engine, tls_server, trust):  # noqa: F811
    trust(tls_server.cafile)
    outcome = check(Target(tls_server.url("/ok"), timeout=TIMEOUT), engine)
    assert outcome.ok, outcome
    assert outcome.cert_days_left in (29, 30)
    assert outcome.timings.tls_ms is not None


def test_unverified_tls_is_ok_and_still_reports_cert_days(engine, tls_server):  # noqa: F811
    outcome = check(Target(tls_server.url("/ok"), verify_tls=False, regex="hello"), engine)
    assert outcome.ok and outcome.cert_days_left in (29, 30)


@pytest.mark.parametrize(("path", "kind"), [("/dribble-headers", "timeout"), ("/ok", None)])
def test_tls_paths(engine, tls_server, path, kind):  # noqa: F811
    outcome = check(Target(tls_server.url(path), timeout=TIMEOUT, verify_tls=False), engine)
    assert outcome.error_kind == kind, outcome


def test_plain_http_to_a_tls_port_is_protocol(engine, tls_server):  # noqa: F811
    outcome = check(Target(tls_server.url("/ok").replace("https://", "http://"), timeout=TIMEOUT), engine)
    assert outcome.error_kind == "protocol", outcome


def test_tls_to_a_plain_http_port_is_tls(engine, hostile_server):  # noqa: F811
    outcome = check(Target(hostile_server.url("/ok").replace("http://", "https://"), timeout=TIMEOUT), engine)
    assert outcome.error_kind == "tls", outcome


def test_silent_tls_handshake_is_cut_at_the_deadline(engine):  # noqa: F811
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        outcome = check(Target(f"https://127.0.0.1:{listener.getsockname()[1]}/", timeout=TIMEOUT), engine)
    assert outcome.error_kind == "timeout" and "TLS handshake" in outcome.error


# --------------------------------------------------------------------------- monitor failures

OUT_OF_FDS = """
import json, resource, socket, sys
from sitewatch.check.choice import engine_named
from sitewatch.check.probe import Target, check
engine = engine_named(sys.argv[1])
urls = sys.argv[2:]
assert check(Target(urls[0]), engine).ok
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
held = []
try:
    while True:
        held.append(socket.socket())
except OSError:
    pass
print(json.dumps([(o.error_kind, o.error) for o in (check(Target(url), engine) for url in urls)]))
"""


def test_out_of_file_descriptors_is_a_monitor_failure_not_the_site(engine, hostile_server):  # noqa: F811
    urls = [hostile_server.url("/ok"), hostile_server.url("/ok").replace("127.0.0.1", "localhost")]
    result = subprocess.run([sys.executable, "-c", OUT_OF_FDS, engine.name, *urls],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for kind, error in json.loads(result.stdout):
        assert kind == "monitor", error
