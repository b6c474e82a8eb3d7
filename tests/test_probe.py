"""The probe against a real, hostile HTTP server on 127.0.0.1.

Deadline cases use a 2 s timeout and assert the check ends within 1 s of it:
long enough to be deterministic, short enough to keep the file fast.
"""

import base64
import datetime
import ipaddress
import json
import logging
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from urllib3.util.ssl_ import create_urllib3_context

import sitewatch
from sitewatch.check import connect, deadline, probe, resolve, tls
from sitewatch.check.probe import Outcome, Target, check, compile_regex, format_outcome, outcome_to_dict
from tests.httpfixture import HostileServer

# Uses no SITEWATCH_TEST_DSN server: CI runs it in its first (embedded) pass only (.ci/run).
pytestmark = pytest.mark.serverless

TIMEOUT = 2.0
SLACK = 1.0  # a deadline case must end by TIMEOUT + SLACK


def timed_check(target: Target) -> tuple[Outcome, float]:
    start = time.monotonic()
    outcome = check(target)
    return outcome, time.monotonic() - start


def assert_failed(outcome: Outcome, kind: str) -> None:
    assert not outcome.ok
    assert outcome.error_kind == kind, outcome
    assert outcome.error  # a readable sentence, never empty


# --------------------------------------------------------------------------- success


def test_ok_records_status_time_and_utc_start(hostile_server):
    before = datetime.datetime.now(datetime.timezone.utc)
    outcome = check(Target(hostile_server.url("/ok"), regex=r"hello \w+"))
    assert outcome.ok and outcome.error_kind is None and outcome.error is None
    assert outcome.status_code == 200
    assert outcome.regex_matched is True
    assert 0 < outcome.response_time_ms < 2000
    assert outcome.started_at.tzinfo is not None and outcome.started_at.utcoffset() == datetime.timedelta(0)
    assert before <= outcome.started_at <= datetime.datetime.now(datetime.timezone.utc)
    assert outcome.cert_days_left is None  # plain http


def test_sends_user_agent_and_connection_close(hostile_server):
    # The server echoes the request headers as the body; the regex looks at them.
    ua = probe.USER_AGENT.replace(".", r"\.")
    assert probe.USER_AGENT == f"sitewatch/{sitewatch.__version__}"
    assert check(Target(hostile_server.url("/echo-headers"), regex=f"(?i)user-agent: {ua}")).ok
    assert check(Target(hostile_server.url("/echo-headers"), regex="(?i)connection: close")).ok
    assert check(Target(hostile_server.url("/echo-headers"), regex="(?i)accept-encoding: .*gzip")).ok


def test_userinfo_is_sent_as_basic_auth(hostile_server):
    url = hostile_server.url("/echo-headers", userinfo="alice:s3cret")
    # base64("alice:s3cret") == "YWxpY2U6czNjcmV0"
    assert check(Target(url, regex="(?i)authorization: Basic YWxpY2U6czNjcmV0")).ok


@pytest.mark.parametrize(("userinfo", "sent"), [
    ("u:%E2%82%ACuro", "u:\u20acuro"),    # UTF-8 percent-encoded: sent as UTF-8, not Latin-1
    ("u:caf\u00e9", "u:caf\u00e9"),          # written raw in the URL
    ("user", "user:"),                      # no colon: an empty password
    ("us%3Aer:p%40ss", "us:er:p@ss"),
])
def test_userinfo_is_sent_as_utf8_basic_auth(hostile_server, userinfo, sent):
    expected = base64.b64encode(sent.encode("utf-8")).decode()
    outcome = check(Target(hostile_server.url("/echo-headers", userinfo=userinfo),
                           regex=f"(?i)authorization: Basic {re.escape(expected)}\r?\n"))
    assert outcome.ok, outcome


def test_an_empty_userinfo_sends_no_authorization(hostile_server):
    url = hostile_server.url("/echo-headers").replace("://", "://@")
    outcome = check(Target(url, regex="(?i)authorization"))
    assert outcome.status_code == 200 and outcome.regex_matched is False


def test_userinfo_follows_a_same_host_redirect_to_https(hostile_server, tls_server):
    url = hostile_server.url("/redirect-to?" + tls_server.url("/echo-headers"), userinfo="alice:s3cret")
    outcome = check(Target(url, verify_tls=False, regex="(?i)authorization: Basic YWxpY2U6czNjcmV0"))
    assert outcome.ok, outcome


def test_userinfo_never_follows_a_redirect_to_another_host(hostile_server):
    other = hostile_server.url("/echo-headers").replace("127.0.0.1", "localhost")
    outcome = check(Target(hostile_server.url(f"/redirect-to?{other}", userinfo="alice:s3cret"),
                           regex="(?i)authorization"))
    assert outcome.status_code == 200
    assert outcome.regex_matched is False


def test_gzip_body_is_decoded_before_matching(hostile_server):
    outcome = check(Target(hostile_server.url("/gzip"), regex="hello sitewatch"))
    assert outcome.ok and outcome.regex_matched is True


def test_head_reads_no_body(hostile_server):
    # The server announces Content-Length: 15 but sends no body to a HEAD: a probe
    # waiting for those bytes would hang until the deadline.
    outcome, elapsed = timed_check(Target(hostile_server.url("/ok"), method="HEAD", timeout=TIMEOUT))
    assert outcome.ok and outcome.status_code == 200
    assert elapsed < 1.0
    assert outcome.regex_matched is None


def test_head_with_a_regex_cannot_match(hostile_server):
    outcome = check(Target(hostile_server.url("/ok"), method="HEAD", regex="hello"))
    assert_failed(outcome, "regex")
    assert outcome.regex_matched is None
    assert "HEAD" in outcome.error


def test_body_exactly_at_the_limit_is_fine(hostile_server):
    outcome = check(Target(hostile_server.url("/big/1000"), max_body_bytes=1000))
    assert outcome.ok


# --------------------------------------------------------------------------- verdicts


def test_status_outside_expected_ranges(hostile_server):
    outcome = check(Target(hostile_server.url("/status/503")))
    assert_failed(outcome, "status")
    assert outcome.status_code == 503
    assert outcome.error == "HTTP 503, expected 200-399"
    assert outcome.response_time_ms is not None  # there was a full response


def test_custom_expected_status(hostile_server):
    target = Target(hostile_server.url("/status/404"), expected_status=((404, 404), (500, 599)))
    assert check(target).ok
    outcome = check(Target(hostile_server.url("/status/200"), expected_status=((404, 404), (500, 599))))
    assert_failed(outcome, "status")
    assert outcome.error == "HTTP 200, expected 404, 500-599"


def test_regex_mismatch(hostile_server):
    outcome = check(Target(hostile_server.url("/ok"), regex="Welcome"))
    assert_failed(outcome, "regex")
    assert outcome.regex_matched is False
    assert outcome.error == "regex 'Welcome' not found in body (15 bytes)"


def test_wrong_status_wins_but_regex_is_still_recorded(hostile_server):
    outcome = check(Target(hostile_server.url("/status/500"), regex="status 500"))
    assert_failed(outcome, "status")
    assert outcome.regex_matched is True


def test_invalid_regex_is_a_regex_failure_not_a_crash(hostile_server):
    outcome = check(Target(hostile_server.url("/ok"), regex="(unclosed"))
    assert_failed(outcome, "regex")
    assert "invalid regex" in outcome.error
    assert outcome.regex_matched is None


def test_non_utf8_body_still_matches(hostile_server):
    assert check(Target(hostile_server.url("/non-utf8"), regex="latin1 text")).regex_matched is True
    # `.` must match the undecodable byte (\xe9), not stop at it.
    assert check(Target(hostile_server.url("/non-utf8"), regex="caf. .*text$")).regex_matched is True


def test_catastrophic_regex_is_linear(hostile_server):
    # (a+)+$ against "a"*100000 + "!" takes forever with backtracking engines.
    outcome, elapsed = timed_check(Target(hostile_server.url("/regex-bomb"), regex="(a+)+$"))
    assert_failed(outcome, "regex")
    assert outcome.regex_matched is False
    assert elapsed < 2.0


def test_compile_regex_is_cached():
    assert compile_regex("cached-pattern") is compile_regex("cached-pattern")


# --------------------------------------------------------------------------- the total deadline


@pytest.mark.parametrize(
    "path",
    [
        "/hang",  # accepts, never replies
        "/dribble-headers",  # a header byte every 0.5 s: per-read timeouts never fire
        "/dribble-body",  # a body byte every 0.5 s
        "/slow/10",
    ],
)
def test_deadline_cases_time_out_at_the_deadline(hostile_server, path):
    outcome, elapsed = timed_check(Target(hostile_server.url(path), timeout=TIMEOUT))
    assert_failed(outcome, "timeout")
    assert TIMEOUT - 0.1 <= elapsed < TIMEOUT + SLACK
    assert outcome.error.startswith("timed out after 2.0 s (total deadline)")
    assert outcome.response_time_ms is None


def test_dribbled_body_keeps_the_status_it_got(hostile_server):
    outcome = check(Target(hostile_server.url("/dribble-body"), timeout=TIMEOUT))
    assert_failed(outcome, "timeout")
    assert outcome.status_code == 200
    assert "reading the body" in outcome.error


def test_deadline_covers_all_redirect_hops(hostile_server):
    # The first hop answers at once; the second hangs: the deadline is per check, not per hop.
    url = hostile_server.url("/redirect-to?" + hostile_server.url("/hang"))
    outcome, elapsed = timed_check(Target(url, timeout=TIMEOUT))
    assert_failed(outcome, "timeout")
    assert elapsed < TIMEOUT + SLACK


def test_slow_but_within_the_deadline_is_ok(hostile_server):
    outcome = check(Target(hostile_server.url("/slow/0.3"), timeout=TIMEOUT))
    assert outcome.ok
    assert outcome.response_time_ms >= 300


# --------------------------------------------------------------------------- bodies


def test_endless_body_is_too_large(hostile_server):
    outcome, elapsed = timed_check(Target(hostile_server.url("/endless"), timeout=TIMEOUT))
    assert_failed(outcome, "body_too_large")
    assert outcome.error == "body exceeds 1048576 bytes"
    assert outcome.status_code == 200
    assert elapsed < TIMEOUT


def test_gzip_bomb_is_too_large_without_memory_growth(hostile_server):
    tracemalloc.start()
    try:
        outcome = check(Target(hostile_server.url("/gzip-bomb"), timeout=TIMEOUT))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert_failed(outcome, "body_too_large")
    # The bomb inflates to 100 MiB; the probe may hold ~1 MiB of body plus buffers.
    assert peak < 16 * 1024 * 1024, f"peak {peak} bytes"


def test_deflate_of_endless_empty_blocks_is_too_large_at_once(hostile_server):
    # urllib3's decoder buffered such input until output appeared, all inside one
    # read(): memory grew and the check ran to its deadline.
    tracemalloc.start()
    try:
        outcome, elapsed = timed_check(Target(hostile_server.url("/deflate-empty-blocks"), timeout=10))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert_failed(outcome, "body_too_large")
    assert outcome.error.startswith("compressed body exceeds")
    assert elapsed < 5
    assert peak < 16 * 1024 * 1024, f"peak {peak} bytes"


def test_a_dribbled_gzip_body_cut_at_the_deadline_is_a_timeout(hostile_server):
    # The cut ends the stream early: that is the deadline's doing, not a truncated body.
    outcome, elapsed = timed_check(Target(hostile_server.url("/dribble-gzip"), timeout=TIMEOUT))
    assert_failed(outcome, "timeout")
    assert elapsed < TIMEOUT + SLACK


@pytest.mark.parametrize("path", ["/truncated-gzip", "/truncated-deflate"])
def test_truncated_compressed_body_is_protocol(hostile_server, path):
    outcome = check(Target(hostile_server.url(path), regex="hello"))
    assert_failed(outcome, "protocol")
    assert "ends early" in outcome.error


@pytest.mark.parametrize("path", ["/deflate/raw", "/deflate/zlib", "/gzip-members"])
def test_every_deflate_form_and_gzip_members_are_decoded(hostile_server, path):
    outcome = check(Target(hostile_server.url(path), regex="^hello sitewatch"))
    assert outcome.ok, outcome


@pytest.mark.parametrize("codes", ["103", "102", "100,103,103"])
def test_interim_responses_are_skipped(hostile_server, codes):
    outcome = check(Target(hostile_server.url(f"/interim/{codes}"), regex="hello"))
    assert outcome.ok, outcome
    assert outcome.status_code == 200


def test_max_body_bytes_counts_decoded_bytes(hostile_server):
    # /gzip sends ~35 compressed bytes that decode to 15.
    assert_failed(check(Target(hostile_server.url("/gzip"), max_body_bytes=10)), "body_too_large")


# --------------------------------------------------------------------------- redirects


def test_redirect_chain_within_the_limit(hostile_server):
    outcome = check(Target(hostile_server.url("/redirect/5"), regex="hello"))
    assert outcome.ok
    assert outcome.status_code == 200  # the final status, not the 302s


def test_too_many_redirects(hostile_server):
    outcome = check(Target(hostile_server.url("/redirect/6")))
    assert_failed(outcome, "redirects")
    assert outcome.status_code == 302
    assert outcome.error.startswith("more than 5 redirects (last: http://127.0.0.1:")


def test_redirects_can_be_disabled(hostile_server):
    assert_failed(check(Target(hostile_server.url("/redirect/1"), max_redirects=0)), "redirects")


def test_redirect_loop(hostile_server):
    outcome, elapsed = timed_check(Target(hostile_server.url("/redirect-loop")))
    assert_failed(outcome, "redirects")
    assert "loop" in outcome.error
    assert elapsed < 1.0


@pytest.mark.parametrize(("location", "words"), [
    ("http://[::1/x", "invalid"),
    ("http://[::1/x?a=b", "invalid"),
    ("http://127.0.0.1:0/ok", "invalid port 0"),  # not the default port
    ("http://127.0.0.1:99999/ok", "invalid"),
])
def test_a_bad_location_is_redirects(hostile_server, location, words):
    outcome = check(Target(hostile_server.url(f"/redirect-to?{location}"), timeout=TIMEOUT))
    assert_failed(outcome, "redirects")
    assert words in outcome.error


def test_redirect_to_another_scheme(hostile_server):
    outcome = check(Target(hostile_server.url("/redirect-to?ftp://files.example/x")))
    assert_failed(outcome, "redirects")
    assert "unsupported URL scheme 'ftp'" in outcome.error


# --------------------------------------------------------------------------- not quite HTTP


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/close-early", "closed the connection without a response"),
        ("/not-http", "not an HTTP response"),
        ("/huge-header", "header line"),
        ("/many-headers", "more than 100 headers"),
        ("/truncated-body", "10 bytes read, 990 more expected"),
        ("/bad-gzip", "cannot decode"),
    ],
)
def test_broken_http_is_protocol(hostile_server, path, words):
    outcome, elapsed = timed_check(Target(hostile_server.url(path), timeout=TIMEOUT))
    assert_failed(outcome, "protocol")
    assert words in outcome.error
    assert elapsed < 1.0


# --------------------------------------------------------------------------- transport


def test_connection_refused_is_connect():
    with socket.socket() as sock:  # a port that was just free: nothing listens on it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    outcome, elapsed = timed_check(Target(f"http://127.0.0.1:{port}/", timeout=TIMEOUT))
    assert_failed(outcome, "connect")
    assert "refused" in outcome.error
    assert outcome.status_code is None and outcome.response_time_ms is None
    assert elapsed < 1.0


@pytest.fixture
def blackholed_address():
    """A 127.0.0.1 address whose SYNs go unanswered, like a broken AAAA record.

    A listener with a backlog of 0 that never accepts: once one connection fills
    its queue, the kernel drops further SYNs, so a connect hangs in SYN-SENT.
    """
    with socket.socket() as listener, socket.socket() as filler:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        filler.connect(listener.getsockname())
        with socket.socket() as probe_sock:  # make sure the queue is full here
            probe_sock.settimeout(0.3)
            try:
                probe_sock.connect(listener.getsockname())
            except TimeoutError:
                pass
            else:
                pytest.skip("this kernel accepts connections beyond the listen backlog")
        yield listener.getsockname()


def test_a_blackholed_first_address_falls_back_to_the_next(monkeypatch, hostile_server, blackholed_address):
    good = ("127.0.0.1", hostile_server.port)

    def getaddrinfo(host, port, *args, **kwargs):  # a resolver hook: the name has two addresses
        assert host == "two-addresses.example"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", blackholed_address),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", good)]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    outcome, elapsed = timed_check(Target("http://two-addresses.example/ok", timeout=TIMEOUT, regex="hello"))
    assert outcome.ok, outcome
    assert elapsed < 1.0  # the next address was tried after the attempt delay, not at the deadline


def test_every_address_blackholed_is_a_timeout_while_connecting(monkeypatch, blackholed_address):
    def getaddrinfo(host, port, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", blackholed_address)] * 3

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    outcome, elapsed = timed_check(Target("http://all-blackholed.example/", timeout=TIMEOUT))
    assert_failed(outcome, "timeout")
    assert "while connecting" in outcome.error
    assert TIMEOUT - 0.1 < elapsed < TIMEOUT + SLACK


def test_addresses_are_tried_with_families_interleaved():
    v6 = [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (f"::{i}", 80, 0, 0)) for i in range(1, 4)]
    v4 = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (f"10.0.0.{i}", 80)) for i in range(1, 3)]
    assert connect.interleave(v6 + v4) == [v6[0], v4[0], v6[1], v4[1], v6[2]]


def test_unresolvable_host_is_dns():
    # .invalid never resolves (RFC 2606); a resolver that cannot answer locally
    # (no network) would make this a timeout instead, which is not what we test.
    start = time.monotonic()
    try:
        socket.getaddrinfo("nonexistent.invalid", 80)
    except socket.gaierror:
        pass
    if time.monotonic() - start > 1.0:
        pytest.skip("the system resolver does not fail fast here (no local answer for .invalid)")
    outcome = check(Target("http://nonexistent.invalid/", timeout=TIMEOUT))
    assert_failed(outcome, "dns")
    assert "nonexistent.invalid" in outcome.error


def test_unresolvable_host_timed_out_when_the_resolver_hangs(monkeypatch):
    # getaddrinfo() cannot be interrupted; the probe must stop waiting for it anyway.
    def hanging_getaddrinfo(*args, **kwargs):
        time.sleep(TIMEOUT + 2)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", hanging_getaddrinfo)
    outcome, elapsed = timed_check(Target("http://slow-dns.example/", timeout=TIMEOUT))
    assert_failed(outcome, "timeout")
    assert "resolving the host name" in outcome.error
    assert elapsed < TIMEOUT + SLACK


def test_a_hung_lookup_does_not_delay_other_lookups(monkeypatch, hostile_server):
    # Resolver threads are reused; one stuck in getaddrinfo() must not hold up the next check.
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host == "stuck.example":
            time.sleep(TIMEOUT + 2)
        return real_getaddrinfo("127.0.0.1" if host == "localhost" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    with ThreadPoolExecutor(4) as pool:
        stuck = [pool.submit(check, Target("http://stuck.example/", timeout=TIMEOUT)) for _ in range(3)]
        time.sleep(0.2)  # the stuck lookups are now holding resolver threads
        outcome, elapsed = timed_check(Target(hostile_server.url("/ok").replace("127.0.0.1", "localhost"),
                                              timeout=TIMEOUT))
        assert outcome.ok, outcome.error
        assert elapsed < 1.0
        assert all(f.result().error_kind == "timeout" for f in stuck)


def test_a_hanging_dns_holds_a_bounded_number_of_resolver_threads(monkeypatch):
    release = threading.Event()
    asked = []

    def hanging_getaddrinfo(host, *args, **kwargs):
        asked.append(host)
        release.wait(30)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", hanging_getaddrinfo)
    monkeypatch.setattr(resolve, "RESOLVER", resolve.Resolver(max_threads=4))
    before = sum(t.name == "sitewatch-dns" for t in threading.enumerate())
    names = [f"hung{i}.example" for i in range(12)] + ["shared.example"] * 12
    try:
        with ThreadPoolExecutor(len(names)) as pool:
            outcomes = list(pool.map(lambda name: check(Target(f"http://{name}/", timeout=1.0)), names))
        started = sum(t.name == "sitewatch-dns" for t in threading.enumerate()) - before
    finally:
        release.set()
    assert all(o.error_kind == "timeout" and "resolving" in o.error for o in outcomes)
    assert started == resolve.RESOLVER.threads == 4
    assert len(asked) == 4  # the lookups queued behind them were given up, never asked
    time.sleep(0.2)  # the freed threads drop the abandoned lookups
    assert len(asked) == 4


def test_ended_checks_do_not_stay_in_the_watchdog_heap(hostile_server):
    # Each entry lived until its deadline: an hour here.
    for _ in range(300):
        assert check(Target(hostile_server.url("/ok"), timeout=3600)).ok
    assert len(deadline.WATCHDOG._heap) <= 2 * deadline.COMPACT_MIN


def test_timeout_from_a_numeric_column_is_accepted(hostile_server):
    assert check(Target(hostile_server.url("/ok"), timeout=Decimal("1.5"))).ok


def test_unsupported_scheme_is_reported_not_raised():
    outcome = check(Target("ftp://example.invalid/file"))
    assert_failed(outcome, "protocol")
    assert "ftp" in outcome.error


# --------------------------------------------------------------------------- monitor failures

# Runs in a subprocess, so that running out of descriptors or threads hurts nobody else.
OUT_OF_FDS = """
import json, resource, socket, sys
from sitewatch.check.probe import Target, check
urls = sys.argv[1:]
assert check(Target(urls[0])).ok  # the watchdog and a resolver thread are running
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
held = []
try:
    while True:
        held.append(socket.socket())
except OSError:
    pass
print(json.dumps([(o.error_kind, o.error) for o in map(check, map(Target, urls))]))
"""

OUT_OF_THREADS = """
import json, resource, sys, threading
from sitewatch.check import resolve
from sitewatch.check.probe import Target, check
literal, name = sys.argv[1:]
def starved(url):
    # No thread can start: its stack does not fit in the address space left.
    threading.stack_size(512 * 1024 * 1024)
    try:
        return check(Target(url))
    finally:
        threading.stack_size(0)
with open("/proc/self/status") as status:
    size = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (size + 256 * 1024 * 1024, resource.RLIM_INFINITY))
first = starved(literal)        # the watchdog thread cannot start
second = check(Target(literal))  # now it can
third = starved(name)           # a resolver thread cannot start
print(json.dumps([(o.error_kind, o.error) for o in (first, second, third)]))
"""


def run_python(script: str, *args: str) -> list:
    result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_out_of_file_descriptors_is_a_monitor_failure_not_the_site(hostile_server):
    urls = [hostile_server.url("/ok"), hostile_server.url("/ok").replace("127.0.0.1", "localhost")]
    for kind, error in run_python(OUT_OF_FDS, *urls):  # socket() fails; getaddrinfo() fails
        assert kind == "monitor", error
        assert "out of file descriptors (EMFILE)" in error


def test_no_thread_for_the_check_is_a_monitor_failure_not_the_site(hostile_server):
    literal = hostile_server.url("/ok")
    first, second, third = run_python(OUT_OF_THREADS, literal, literal.replace("127.0.0.1", "localhost"))
    assert first[0] == "monitor" and "can't start new thread" in first[1], first
    assert second == [None, None]
    assert third[0] == "monitor" and "can't start new thread" in third[1], third


# --------------------------------------------------------------------------- secrets


@pytest.mark.parametrize(
    "path",
    [
        "/redirect-loop?token=secret",  # URL in a redirects error
        "/redirect/9?token=secret",
        "/echo-request-line?token=secret",  # the server echoes our request line back
        "/status/503?token=secret",
        "/hang?token=secret",
    ],
)
def test_errors_never_show_userinfo_or_query(hostile_server, path):
    outcome = check(Target(hostile_server.url(path, userinfo="user:secret"), timeout=1.0))
    assert not outcome.ok
    assert "secret" not in outcome.error
    assert "user:" not in outcome.error
    text = format_outcome(Target(hostile_server.url(path, userinfo="user:secret")), outcome)
    assert "secret" not in text


def test_a_secret_is_redacted_before_the_message_is_cut(hostile_server):
    # The echoed request line is far longer than an error may be; the token sits
    # where a cut made before redaction would split it.
    path = f"/echo-request-line?pad={'p' * 150}&token=tok{'CANARY' * 5}"
    outcome = check(Target(hostile_server.url(path)))
    assert_failed(outcome, "protocol")
    assert "not an HTTP response" in outcome.error
    assert "CANARY" not in outcome.error


def test_the_basic_auth_value_is_redacted(hostile_server):
    outcome = check(Target(hostile_server.url("/echo-auth-line", userinfo="alice:s3cret")))
    assert_failed(outcome, "protocol")
    assert "AUTH Basic ***" in outcome.error
    assert "YWxpY2U6czNjcmV0" not in outcome.error


def test_a_short_password_does_not_garble_messages(hostile_server):
    outcome = check(Target(hostile_server.url("/status/401", userinfo="user:0")))
    assert outcome.error == "HTTP 401, expected 200-399"


@pytest.mark.parametrize("path", [f"/redirect-to?/{'a' * 60_000}", f"/echo-request-line?{'b' * 60_000}"])
def test_every_error_is_short_whatever_the_server_sends(hostile_server, path):
    outcome = check(Target(hostile_server.url(path), max_redirects=0))
    assert not outcome.ok
    assert len(outcome.error) <= probe.MAX_ERROR_CHARS, len(outcome.error)


def test_urllib3_log_lines_do_not_show_the_query(hostile_server, caplog):
    # On malformed headers urllib3 logs a warning with the request URL in it.
    with caplog.at_level(logging.WARNING, logger="urllib3"):
        outcome = check(Target(hostile_server.url("/bad-header-line?token=secret")))
    assert outcome.status_code == 200
    assert "Failed to parse headers" in caplog.text  # the warning is there...
    assert "secret" not in caplog.text  # ...without the token


# --------------------------------------------------------------------------- concurrency


def test_concurrent_checks_are_all_classified(hostile_server):
    paths = ["/ok", "/hang", "/dribble-headers", "/dribble-body", "/status/503", "/close-early"] * 9
    expected = {
        "/ok": None,
        "/hang": "timeout",
        "/dribble-headers": "timeout",
        "/dribble-body": "timeout",
        "/status/503": "status",
        "/close-early": "protocol",
    }
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(paths)) as pool:
        outcomes = list(pool.map(lambda p: check(Target(hostile_server.url(p), timeout=TIMEOUT)), paths))
    elapsed = time.monotonic() - start
    assert [o.error_kind for o in outcomes] == [expected[p] for p in paths]
    assert elapsed < TIMEOUT + SLACK  # the deadlines ran in parallel, each cut on time


def test_watchdog_starts_once(hostile_server):
    check(Target(hostile_server.url("/ok")))
    threads = [t for t in threading.enumerate() if t.name == "sitewatch-watchdog"]
    assert len(threads) == 1


# --------------------------------------------------------------------------- output


def test_outcome_to_dict_is_json_serialisable(hostile_server):
    outcome = check(Target(hostile_server.url("/ok")))
    data = json.loads(json.dumps(outcome_to_dict(outcome)))
    assert data["ok"] is True and data["status_code"] == 200
    assert datetime.datetime.fromisoformat(data["started_at"]) == outcome.started_at


def test_format_outcome(hostile_server):
    target = Target(hostile_server.url("/status/503"), regex="status")
    text = format_outcome(target, check(target))
    assert "DOWN" in text
    assert "503" in text
    assert "[status] HTTP 503, expected 200-399" in text
    assert "'status' matched" in text


# --------------------------------------------------------------------------- TLS


def _self_signed_cert(directory) -> tuple[str, str]:
    """A throwaway self-signed cert for 127.0.0.1: with `cryptography` if installed, else openssl."""
    cert, key = str(directory / "cert.pem"), str(directory / "key.pem")
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        if shutil.which("openssl") is None:
            pytest.skip("neither the cryptography package nor the openssl command is available")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", key, "-out", cert, "-days", "30", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1"],
            check=True, capture_output=True,
        )  # fmt: skip
        return cert, key
    private_key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(san, critical=False)
        .sign(private_key, hashes.SHA256())
    )
    with open(cert, "wb") as f:
        f.write(certificate.public_bytes(serialization.Encoding.PEM))
    with open(key, "wb") as f:
        f.write(
            private_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return cert, key


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    cert, key = _self_signed_cert(tmp_path_factory.mktemp("tls"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with HostileServer(tls=context) as server:
        server.cafile = cert
        yield server


def test_self_signed_cert_fails_verification(tls_server):
    outcome = check(Target(tls_server.url("/ok"), timeout=TIMEOUT))
    assert_failed(outcome, "tls")
    assert "certificate verify failed" in outcome.error
    assert outcome.cert_days_left in (29, 30)  # a certificate was presented: its expiry is recorded


def _trusting(cafile):
    """A tls.ssl_context replacement that trusts `cafile` as if a real CA had issued it."""
    real = tls.ssl_context
    context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
    context.load_verify_locations(cafile)
    return lambda verify: context if verify else real(False)


@pytest.fixture(scope="module")
def expired_tls_server(tmp_path_factory):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory = tmp_path_factory.mktemp("expired")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=30)).not_valid_after(now - datetime.timedelta(days=3))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    cert, keyfile = directory / "cert.pem", directory / "key.pem"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, keyfile)
    with HostileServer(tls=context) as server:
        server.cafile = str(cert)
        yield server


def test_an_expired_certificate_records_negative_days_left(expired_tls_server, monkeypatch):
    monkeypatch.setattr(tls, "ssl_context", _trusting(expired_tls_server.cafile))
    outcome = check(Target(expired_tls_server.url("/ok"), timeout=TIMEOUT))
    assert_failed(outcome, "tls")
    assert "certificate has expired" in outcome.error
    assert outcome.cert_days_left in (-4, -3)


def test_the_shared_tls_context_is_never_changed_by_a_check(tls_server, monkeypatch):
    # urllib3 sets ALPN on the context before each handshake; on a context shared
    # by threads that is the use-after-free of CPython issue 141012.
    context = tls.ssl_context(False)
    calls = []
    real = ssl.SSLContext.set_alpn_protocols
    monkeypatch.setattr(ssl.SSLContext, "set_alpn_protocols",
                        lambda self, protocols: (calls.append(self), real(self, protocols)))
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(check, [Target(tls_server.url("/ok"), verify_tls=False)] * 16))
    assert all(o.ok for o in outcomes)
    assert context not in calls


def test_unverified_tls_is_ok_and_still_reports_cert_days(tls_server):
    outcome = check(Target(tls_server.url("/ok"), timeout=TIMEOUT, verify_tls=False, regex="hello"))
    assert outcome.ok, outcome
    assert outcome.cert_days_left in (29, 30)  # read from the raw certificate: notAfter is 30 days out


def test_verified_cert_reports_days_left(tls_server, monkeypatch):
    monkeypatch.setattr(tls, "ssl_context", _trusting(tls_server.cafile))
    outcome = check(Target(tls_server.url("/ok"), timeout=TIMEOUT))
    assert outcome.ok, outcome
    assert outcome.cert_days_left in (29, 30)  # notAfter is 30 days from now


def test_tls_dribble_is_cut_at_the_deadline(tls_server):
    target = Target(tls_server.url("/dribble-headers"), timeout=TIMEOUT, verify_tls=False)
    outcome, elapsed = timed_check(target)
    assert_failed(outcome, "timeout")
    assert elapsed < TIMEOUT + SLACK


def test_plain_http_to_a_tls_port_is_protocol(tls_server):
    outcome = check(Target(tls_server.url("/ok").replace("https://", "http://"), timeout=TIMEOUT))
    assert_failed(outcome, "protocol")


def test_silent_tls_handshake_is_cut_at_the_deadline():
    # A listener that never accepts: TCP connects (the kernel's backlog), the
    # ClientHello goes unanswered. The handshake must not outlive the deadline.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"https://127.0.0.1:{listener.getsockname()[1]}/"
        outcome, elapsed = timed_check(Target(url, timeout=TIMEOUT))
    assert_failed(outcome, "timeout")
    assert "TLS handshake" in outcome.error
    assert elapsed < TIMEOUT + SLACK


def test_tls_to_a_plain_http_port_is_tls(hostile_server):
    outcome = check(Target(hostile_server.url("/ok").replace("http://", "https://"), timeout=TIMEOUT))
    assert_failed(outcome, "tls")


def test_certificate_expiry_is_read_from_der_in_both_time_formats(tmp_path):
    # Certificates expiring after 2049 carry GeneralizedTime, earlier ones UTCTime.
    import shutil
    import subprocess
    if shutil.which("openssl") is None:
        pytest.skip("openssl command not available")
    for days in (30, 15000):
        key, cert = tmp_path / f"k{days}.pem", tmp_path / f"c{days}.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                        "-out", str(cert), "-days", str(days), "-subj", "/CN=sitewatch-test"],
                       check=True, capture_output=True)
        der = ssl.PEM_cert_to_DER_cert(cert.read_text())
        left = (tls.der_not_after(der) - time.time()) / 86400
        assert days - 1 <= left <= days + 1
    assert tls.der_not_after(b"not a certificate") is None



# --------------------------------------------------------------------------- hot-path shortcuts


def test_a_regex_gives_the_same_verdict_on_bytes_as_on_the_decoded_text():
    # Valid UTF-8 bodies are searched as bytes (no decoding); the verdict must be the one the
    # decoded text gives, and an invalid body still goes through the text (U+FFFD for bad bytes).
    from sitewatch.regex import search_bytes
    bodies = [b"", b"sitewatch bench ok\n", "café au lait".encode(), "\u00e9".encode(), b"caf\xe9",
              b"\xff\xfe ok", "日本語 ok".encode(), b"a\x00b", "x\u2028y".encode()]
    patterns = ["ok", "^ok$", "caf.", "caf. au", "^.$", "(?i)CAFÉ", r"\bok\b", "日本", "^...$",
                "\ufffd", r"\xe9", "(?s)a.b", "x.y", r"^\C$", "(?m)^y", ""]
    for body in bodies:
        for pattern in patterns:
            text_verdict = compile_regex(pattern).search(body.decode("utf-8", errors="replace")) is not None
            assert search_bytes(pattern, body) is text_verdict, (pattern, body)


def test_plain_urls_are_split_as_urllib3_splits_them():
    # Hops.parse splits plain URLs itself (parse_url costs a check ~5 us per hop); for any URL
    # it takes, the answer must be parse_url's, and the common shapes must take it.
    import itertools

    from urllib3.util import parse_url

    from sitewatch.check.redirects import parse_plain
    schemes = ["http", "https", "HTTP", "ftp"]
    hosts = ["127.0.0.1", "example.com", "Example.com", "a-b.c", "xn--bcher-kva.example", "bücher.de", "a..b",
             "[::1]", "h.", "-a"]
    ports = ["", ":80", ":0", ":65535", ":65536", ":080", ":99999", ":"]
    paths = ["", "/", "/u/1", "/a/../b", "/a/./b", "/a/..", "/.well-known/x", "/%7e", "/%2f", "/a b", "/é",
             "//x", "/a;b=c", "/a:b@c", "/~u", "/a/b.", "/a/..b"]
    queries = ["", "?q=1", "?", "?a=%20", "?a b", "?x=/y?z", "#f", "?q#f"]
    taken = 0
    for scheme, host, port, path, query in itertools.product(schemes, hosts, ports, paths, queries):
        url = f"{scheme}://{host}{port}{path}{query}"
        fast = parse_plain(url)
        if fast is None:
            continue
        taken += 1
        assert fast == parse_url(url), url
        assert fast.url == url, url
    assert taken > 500
    assert parse_plain("http://127.0.0.1:8080/u/1") is not None
    assert parse_plain("https://example.com/status?x=1") is not None
