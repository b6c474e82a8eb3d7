"""tcp:// and tls:// monitors (issue 20) against real servers on 127.0.0.1.

Each check goes the way a consumer's does: the options through urlspec.make_entry (validated,
stored form), definition.target_for, then probe.check, which hands a non-HTTP URL to its
kind's fetch (check/kinds.py) and judges the response like any other.
"""

import socket
import time

import pytest

from sitewatch import config
from sitewatch.check import choice as engines
from sitewatch.check import definition, kinds, probe, tls
from sitewatch.errors import BadInput
from sitewatch.urlspec import make_entry
from tests.kindservers import (
    StreamServer,
    certificates,
    chatter,
    echo,
    handshake_only,
    ping_pong,
    silent,
    tls_context,
)

pytestmark = pytest.mark.serverless

TIMEOUT = 2.0
SLACK = 1.0
CFG = config.load({}, {}, None)


# tcp:// checks run on a thread (probe.check: the urllib3 engine's consumers, `sitewatch check`)
# or on the curl engine's loop (run/transfers.py: libcurl connects, the same steps follow);
# every tcp:// test runs both ways and expects the same.
VIA = pytest.mark.parametrize("via", ["thread", "loop"])


def check(url, via="thread", **options):
    entry = make_entry({"url": url, "timeout": TIMEOUT, **options}, CFG.check)
    target = definition.target_for(entry.as_row(), CFG.check.max_body_bytes)
    if via == "loop":
        if not engines.curl_available():
            pytest.skip("pycurl is not installed")
        from tests.test_transfers import run_all
        return run_all([target])[0]
    return probe.check(target)


def timed(url, via="thread", **options):
    start = time.monotonic()
    outcome = check(url, via, **options)
    return outcome, time.monotonic() - start


@pytest.fixture
def serve():
    servers = []

    def start(handler, context=None):
        server = StreamServer(handler, context)
        servers.append(server)
        return server
    yield start
    for server in servers:
        server.close()


# --- tcp:// ------------------------------------------------------------------------------------

@VIA
def test_send_and_expect_match(serve, via):
    server = serve(ping_pong)
    outcome = check(server.url(), via, send=r"PING\r\n", expect="^PONG")
    assert outcome.ok and outcome.error_kind is None, outcome
    assert outcome.regex_matched is True
    assert server.received == [b"PING\r\n"]          # the escapes were decoded before sending
    assert outcome.status_code is None and outcome.response_time_ms is not None
    assert outcome.timings.connect_ms is not None and outcome.timings.first_byte_ms is not None


@VIA
def test_an_answer_that_does_not_match_expect_is_a_regex_failure_quoting_it(serve, via):
    server = serve(ping_pong)
    outcome = check(server.url(), via, send="HELO", expect="PONG")   # no line end: the server waits...
    assert outcome.error_kind == "timeout"                      # ...and nothing comes back
    outcome = check(server.url(), via, send=r"HELO\n", expect="PONG")
    assert not outcome.ok and outcome.error_kind == "regex", outcome
    assert outcome.regex_matched is False
    assert "expect 'PONG' not found in the 6 bytes read" in outcome.error and "WHAT" in outcome.error


@VIA
@pytest.mark.parametrize("answer", ["café ok\n".encode(), b"caf\xe9 ok\n"])
def test_expect_matches_utf8_and_latin1_answers_as_text_and_stops_reading(serve, answer, via):
    # `.` is one character: the UTF-8 é, and the Latin-1 byte as U+FFFD (an invalid UTF-8
    # answer is decoded with replacement; a valid one is searched as bytes, the same verdict).
    # The server then holds the connection open: only the match ends the read before the deadline.
    def answers_then_holds(conn, server):
        server.received.append(conn.recv(64))
        conn.sendall(answer)
        silent(conn, server)
    server = serve(answers_then_holds)
    outcome, elapsed = timed(server.url(), via, send=r"HI\n", expect="^caf. ok")
    assert outcome.ok and outcome.regex_matched is True, outcome
    assert elapsed < 1.0
    outcome, elapsed = timed(server.url(), via, send=r"HI\n", expect="^caf.. ok")   # not two characters
    assert outcome.error_kind == "regex" and outcome.regex_matched is False, outcome


@VIA
def test_without_expect_nothing_is_read_so_a_silent_server_is_up_at_once(serve, via):
    server = serve(silent)
    outcome, elapsed = timed(server.url(), via, send=r"QUIT\r\n")
    assert outcome.ok, outcome
    assert elapsed < 1.0
    deadline = time.monotonic() + 2      # the server's accept thread may come round later
    while server.accepted < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.accepted == 1


@VIA
def test_expect_reads_at_most_one_kib(serve, via):
    server = serve(chatter)
    outcome, elapsed = timed(server.url(), via, expect="PONG")
    assert outcome.error_kind == "regex", outcome
    assert "not found in the 1024 bytes read" in outcome.error
    assert elapsed < 1.0       # it stopped at 1 KiB, not at the deadline


@VIA
def test_a_refused_port_is_connect(via):
    probe_sock = socket.socket()
    probe_sock.bind(("127.0.0.1", 0))
    port = probe_sock.getsockname()[1]
    probe_sock.close()          # bound once, never listening: refused
    outcome = check(f"tcp://127.0.0.1:{port}", via, expect="x")
    assert outcome.error_kind == "connect", outcome
    assert f"cannot connect to 127.0.0.1 port {port}" in outcome.error


@VIA
def test_a_server_that_never_answers_times_out_at_the_deadline(serve, via):
    server = serve(silent)
    outcome, elapsed = timed(server.url(), via, send=r"PING\r\n", expect="PONG")
    assert outcome.error_kind == "timeout", outcome
    assert "waiting for the response" in outcome.error
    assert TIMEOUT - 0.1 <= elapsed < TIMEOUT + SLACK


@VIA
def test_a_name_that_does_not_resolve_is_dns(via):
    start = time.monotonic()
    try:
        socket.getaddrinfo("nonexistent.invalid", 80)
    except socket.gaierror:
        pass
    if time.monotonic() - start > 1.0:
        pytest.skip("the system resolver does not fail fast here (no local answer for .invalid)")
    outcome = check("tcp://nonexistent.invalid:25", via)
    assert outcome.error_kind == "dns", outcome
    assert "cannot resolve nonexistent.invalid" in outcome.error


@VIA
def test_status_ranges_do_not_apply_to_a_tcp_check(serve, via):
    server = serve(ping_pong)
    outcome = check(server.url(), via, send=r"PING\n", expect="PONG", expected_status="500")
    assert outcome.ok, outcome


@VIA
def test_assertions_on_what_was_read_and_the_time(serve, via):
    server = serve(ping_pong)
    outcome = check(server.url(), via, send=r"PING\n", expect="PONG", **{"assert": ['body contains "PONG"']},
                    degraded=["response_time < 0.001"])
    assert outcome.ok and outcome.degraded, outcome
    assert outcome.error.startswith("response_time < 0.001: got")
    outcome = check(server.url(), via, send=r"PING\n", expect="PONG", **{"assert": ['body not contains "PONG"']})
    assert outcome.error_kind == "assertion" and "body not contains" in outcome.error


@VIA
def test_a_variable_in_send_is_read_here_and_kept_out_of_errors(serve, monkeypatch, via):
    server = serve(echo)         # the answer, quoted by the error, holds the secret
    monkeypatch.setenv("TCP_SECRET", "hunter2-s3cret")
    outcome = check(server.url(), via, send=r"PING ${TCP_SECRET}\n", expect="nothing-like-this")
    assert server.received == [b"PING hunter2-s3cret\n"]
    assert outcome.error_kind == "regex" and "'PING ***\\n'" in outcome.error, outcome.error
    assert "hunter2" not in outcome.error


# --- tls:// ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def short_lived(tmp_path_factory):
    """Certificates for 127.0.0.1 expiring in 3 days, from a test CA."""
    return certificates(tmp_path_factory.mktemp("kinds-tls"), days_left=3.5)


@pytest.fixture
def trusting(monkeypatch):
    """Make tls:// checks trust a CA file, as if a real CA had issued the test certificate: the
    system's CA file named by SSL_CERT_FILE, read when sitewatch's own context is built."""
    def trust(cafile):
        monkeypatch.setenv("SSL_CERT_FILE", cafile)
        tls.handshake_context.cache_clear()
    yield trust
    tls.handshake_context.cache_clear()    # the next test builds it with the real environment


def test_a_verified_handshake_is_up_and_records_days_left(serve, short_lived, trusting):
    trusting(short_lived["ca"])
    server = serve(handshake_only, tls_context(short_lived))
    outcome = check(server.url("tls"))
    assert outcome.ok, outcome
    assert outcome.cert_days_left == 3
    assert outcome.timings.tls_ms is not None and outcome.status_code is None


def test_cert_days_assertion_fails_a_certificate_expiring_in_3_days(serve, short_lived, trusting):
    trusting(short_lived["ca"])
    server = serve(handshake_only, tls_context(short_lived))
    outcome = check(server.url("tls"), **{"assert": ["cert_days > 14"]})
    assert not outcome.ok and outcome.error_kind == "assertion", outcome
    assert outcome.error == "cert_days > 14: got 3"
    assert outcome.cert_days_left == 3


def test_an_untrusted_ca_fails_verification_but_days_left_are_recorded(serve, short_lived):
    server = serve(handshake_only, tls_context(short_lived))
    outcome = check(server.url("tls"))           # the system's CAs do not include the test CA
    assert outcome.error_kind == "tls", outcome
    assert "certificate verify failed" in outcome.error
    assert outcome.cert_days_left == 3


def test_verify_tls_off_accepts_any_certificate(serve, short_lived):
    server = serve(handshake_only, tls_context(short_lived))
    outcome = check(server.url("tls"), verify_tls=False)
    assert outcome.ok and outcome.cert_days_left == 3, outcome


def test_the_hostname_is_checked(serve, short_lived, trusting):
    trusting(short_lived["ca"])
    server = serve(handshake_only, tls_context(short_lived))
    outcome = check(server.url("tls", host="localhost"))    # the certificate names 127.0.0.1 only
    assert outcome.error_kind == "tls", outcome
    assert "certificate verify failed" in outcome.error and "localhost" in outcome.error.lower()


def test_a_server_that_does_not_speak_tls_is_a_tls_failure(serve):
    server = serve(ping_pong)
    outcome = check(server.url("tls"))
    assert outcome.error_kind in ("tls", "timeout"), outcome
    assert outcome.error_kind == "tls" or "TLS handshake" in outcome.error


# --- what a definition may say --------------------------------------------------------------

@pytest.mark.parametrize("options, words", [
    ({"url": "tcp://example.com"}, "needs a port"),
    ({"url": "tcp://example.com:0"}, "needs a port"),
    ({"url": "tcp://example.com:70000"}, "port"),
    ({"url": "tcp://example.com:25/path"}, "no path"),
    ({"url": "tcp://user:pw@example.com:25"}, "no user or password"),
    ({"url": "gopher://example.com:70"}, "scheme must be http, https, tcp, tls"),
    ({"url": "tcp://example.com:25", "headers": ["X-A: b"]}, "headers does not apply to a tcp:// monitor"),
    ({"url": "tcp://example.com:25", "regex": "x"}, "give expect"),
    ({"url": "tcp://example.com:25", "method": "POST"}, "method does not apply"),
    ({"url": "tls://example.com:993", "send": "x"}, "send does not apply to a tls:// monitor"),
    ({"url": "https://example.com/", "send": "x"}, "send does not apply to an http(s) monitor"),
    ({"url": "https://example.com/", "expect": "x"}, "expect does not apply to an http(s) monitor"),
    ({"url": "tcp://example.com:25", "send": r"A\qB"}, "unknown escape"),
    ({"url": "tcp://example.com:25", "expect": "(unclosed"}, "does not compile"),
    ({"url": "tcp://example.com:25", "assert": ["json $.x == 1"]}, "'json $.x == 1' does not apply to a tcp://"),
    ({"url": "tcp://example.com:25", "assert": ["status == 200"]}, "does not apply"),
    ({"url": "tls://example.com:993", "degraded": ["body contains \"x\""]}, "degraded: 'body contains"),
    ({"url": "https://example.com/", "assert": ["rcode == NOERROR"]}, "does not apply to an http(s) monitor"),
])
def test_what_a_kind_does_not_take_is_refused_naming_it(options, words):
    with pytest.raises(BadInput) as refused:
        make_entry(options, CFG.check)
    assert words in str(refused.value)


def test_urls_of_each_kind_are_normalised():
    assert make_entry({"url": "TCP://Mail.Example.COM:25/"}, CFG.check).url == "tcp://mail.example.com:25"
    assert make_entry({"url": "tls://[::1]:993"}, CFG.check).url == "tls://[::1]:993"
    assert make_entry({"url": "tcp://bücher.example:8080"}, CFG.check).url == "tcp://xn--bcher-kva.example:8080"


def test_send_escapes_become_bytes_stored_as_the_body():
    entry = make_entry({"url": "tcp://h.example:7", "send": r"A\r\n\t\x00\xff\\z", "expect": "B"}, CFG.check)
    assert entry.body == b"A\r\n\t\x00\xff\\z" and entry.regex == "B"


def test_every_registered_kind_is_importable_and_owns_its_scheme():
    for scheme in kinds.SCHEMES:
        module = kinds.module(scheme)
        if scheme in kinds.HTTP_SCHEMES:
            assert module is None
            continue
        assert module.SCHEME == scheme and callable(module.fetch) and callable(module.normalise)
        assert module.SUBJECTS


def test_out_of_file_descriptors_is_a_monitor_failure_not_the_site(serve):
    from tests.test_probe import OUT_OF_FDS, run_python
    server = serve(silent)
    urls = [server.url(), server.url(host="localhost"), server.url("tls")]
    for kind, error in run_python(OUT_OF_FDS, *urls):   # socket() fails; getaddrinfo() fails
        assert kind == "monitor", error
        assert "out of file descriptors (EMFILE)" in error
