"""check.source_address (issue 21): every check binds to the host's source address, seen from
that address by real servers on 127.0.0.1 that record their peers (all of 127.0.0.0/8 is this
host's, so 127.0.0.2 and .3 stand for two networks).

Each check goes the way a consumer's does: the options through urlspec.make_entry, then
definition.target_for with the configured source address, then the engine or the kind. The
HTTP cases run on both engines (issue 23's differential pattern); tcp://, tls:// and dns://
against the servers of tests/kindservers.py and a dnslib server. icmp:// is covered in
tests/test_kind_icmp.py's namespace (this host forbids ICMP sockets).
"""

import json
import socket
import subprocess
import sys

import pytest
from dnslib import QTYPE, RR
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from sitewatch import config
from sitewatch.check import choice as engines
from sitewatch.check import definition, dns, probe
from sitewatch.errors import ConfigError
from sitewatch.urlspec import make_entry
from tests.conftest import clean_env
from tests.enginefixture import EchoServer
from tests.kindservers import StreamServer, certificates, handshake_only, ping_pong, tls_context
from tests.regionharness import RESET_ERROR, SourceFilteringServer

pytestmark = pytest.mark.serverless

CFG = config.load({}, {}, None)
TIMEOUT = 5.0
SOURCES = ["127.0.0.2", "127.0.0.3"]
NOT_HERE = "203.0.113.7"    # TEST-NET-3: no address of this host


def target(url, source, **options):
    entry = make_entry({"url": url, "timeout": TIMEOUT, **options}, CFG.check)
    return definition.target_for(entry.as_row(), CFG.check.max_body_bytes, source)


@pytest.fixture(params=["urllib3", "curl"])
def engine(request):
    if request.param == "curl" and not engines.curl_available():
        pytest.skip("pycurl is not installed")
    return engines.engine_named(request.param)


@pytest.fixture(scope="module")
def echo():
    with EchoServer() as server:
        yield server


@pytest.fixture(scope="module")
def ipv6_echo():
    try:
        server = EchoServer("::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with server:
        yield server


# --- HTTP, both engines --------------------------------------------------------------------


@pytest.mark.parametrize("source", SOURCES)
def test_an_http_check_is_seen_from_the_source_address(engine, echo, source):
    response = engine.fetch(target(echo.url(), source).request)
    assert response.error_kind is None, response.error
    assert json.loads(response.body)["client"] == source


def test_without_a_source_address_the_system_chooses(engine, echo):
    response = engine.fetch(target(echo.url(), None).request)
    assert json.loads(response.body)["client"] == "127.0.0.1"


def test_the_check_is_judged_as_usual(engine):
    with SourceFilteringServer(refuse={"127.0.0.3"}) as server:
        up = probe.check(target(server.url(), "127.0.0.2"), engine)
        down = probe.check(target(server.url(), "127.0.0.3"), engine)
        answered, refused = server.counts()
    assert up.ok and up.status_code == 200, up
    assert not down.ok and down.error_kind in ("connect", "protocol"), down
    assert RESET_ERROR.search(down.error), down.error        # an RST, as a firewall's reject sends
    assert answered == {"127.0.0.2": 1} and refused == {"127.0.0.3": 1}


def test_an_ipv6_target_from_an_ipv4_source_is_a_dns_failure_naming_it(engine, ipv6_echo):
    response = engine.fetch(target(ipv6_echo.url(), "127.0.0.2").request)
    assert response.error_kind == "dns"
    assert response.error == "cannot resolve ::1: no IPv4 address to reach from source address 127.0.0.2"


def test_an_ipv4_target_from_an_ipv6_source_is_a_dns_failure_naming_it(engine, ipv6_echo, echo):
    response = engine.fetch(target(echo.url(), "::1").request)
    assert response.error_kind == "dns"
    assert response.error == "cannot resolve 127.0.0.1: no IPv6 address to reach from source address ::1"
    assert json.loads(engine.fetch(target(ipv6_echo.url(), "::1").request).body)["client"] == "::1"


def test_a_name_is_reached_in_the_source_addresss_family(engine, echo):
    # libcurl answers `localhost` itself with ::1 too: only 127.0.0.1 can be reached from .3.
    response = engine.fetch(target(echo.url().replace("127.0.0.1", "localhost"), "127.0.0.3").request)
    assert json.loads(response.body)["client"] == "127.0.0.3"


def test_an_ip_version_that_contradicts_the_source_address_is_a_connect_failure(engine, echo):
    response = engine.fetch(target(echo.url().replace("127.0.0.1", "localhost"), "127.0.0.2",
                                   ip_version="6").request)
    assert response.error_kind == "connect"
    assert response.error == ("ip-version 6 cannot be used from this host's source address 127.0.0.2 "
                              "(IPv4; check.source_address)")


# --- tcp:// and tls:// --------------------------------------------------------------------


class PeerRecordingServer(StreamServer):
    """StreamServer that notes every connection's source address, before any TLS handshake."""

    def __init__(self, handler, context=None) -> None:
        self.peers: list[str] = []
        super().__init__(handler, context)

    def _serve(self, conn) -> None:
        self.peers.append(conn.getpeername()[0])
        super()._serve(conn)


@pytest.fixture
def serve():
    servers = []

    def start(handler, context=None):
        servers.append(PeerRecordingServer(handler, context))
        return servers[-1]
    yield start
    for server in servers:
        server.close()


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return certificates(tmp_path_factory.mktemp("source-tls"), days_left=30.5)


@pytest.mark.parametrize("source", SOURCES)
def test_a_tcp_check_is_seen_from_the_source_address(serve, source):
    server = serve(ping_pong)
    outcome = probe.check(target(server.url(), source, send=r"PING\n", expect="PONG"))
    assert outcome.ok, outcome
    assert server.peers == [source]


@pytest.mark.parametrize("source", SOURCES)
def test_a_tls_check_is_seen_from_the_source_address(serve, certs, source):
    server = serve(handshake_only, tls_context(certs))
    outcome = probe.check(target(server.url("tls"), source, verify_tls=False))
    assert outcome.ok and outcome.cert_days_left == 30, outcome
    assert server.peers == [source]


def test_a_tls_checks_second_handshake_for_the_days_left_is_from_the_source_too(serve, certs):
    server = serve(handshake_only, tls_context(certs))
    outcome = probe.check(target(server.url("tls"), "127.0.0.3"))     # the test CA is not trusted
    assert outcome.error_kind == "tls" and outcome.cert_days_left == 30, outcome
    assert server.peers == ["127.0.0.3", "127.0.0.3"]


def test_an_https_checks_second_handshake_is_from_the_source_on_both_engines(engine, serve, certs):
    server = serve(handshake_only, tls_context(certs))
    response = engine.fetch(target(server.url("https") + "/", "127.0.0.2").request)
    assert response.error_kind == "tls" and response.cert_days_left == 30, response
    assert server.peers == ["127.0.0.2", "127.0.0.2"]


def test_a_tcp_target_of_the_other_family_is_a_dns_failure(serve):
    outcome = probe.check(target("tcp://127.0.0.1:9", "::1"))
    assert outcome.error_kind == "dns"
    assert outcome.error == "cannot resolve 127.0.0.1: no IPv6 address to reach from source address ::1"


# --- dns:// --------------------------------------------------------------------------------


class RecordingResolver(BaseResolver):
    """Answers every A question with 192.0.2.1, noting (protocol, client address); a name
    starting with `big` gets a truncated UDP reply, so it is asked again over TCP."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    def resolve(self, request, handler):
        self.asked.append((handler.protocol, handler.client_address[0]))
        reply = request.reply()
        if str(request.q.qname).startswith("big") and handler.protocol == "udp":
            reply.header.tc = 1
        else:
            reply.add_answer(*RR.fromZone(f"{request.q.qname} 60 IN A 192.0.2.1"))
        assert QTYPE[request.q.qtype] == "A"
        return reply


@pytest.fixture(scope="module")
def resolver():
    recording = RecordingResolver()
    quiet = DNSLogger(log="-request,-reply,-truncated,-error", prefix=False)
    while True:     # one port free for both UDP and TCP
        with socket.socket() as probe_tcp:
            probe_tcp.bind(("127.0.0.1", 0))
            port = probe_tcp.getsockname()[1]
        try:
            servers = [DNSServer(recording, address="127.0.0.1", port=port, logger=quiet),
                       DNSServer(recording, address="127.0.0.1", port=port, tcp=True, logger=quiet)]
            break
        except OSError:
            continue
    for server in servers:
        server.start_thread()
    yield port, recording
    for server in servers:
        server.stop()
        server.server.server_close()


@pytest.mark.parametrize("source", SOURCES)
def test_a_dns_query_is_sent_from_the_source_address(resolver, source):
    port, recording = resolver
    recording.asked.clear()
    outcome = probe.check(target(f"dns://127.0.0.1:{port}/ok.test", source))
    assert outcome.ok, outcome
    assert recording.asked == [("udp", source)]


def test_a_dns_query_asked_again_over_tcp_is_from_the_source_too(resolver):
    port, recording = resolver
    recording.asked.clear()
    outcome = probe.check(target(f"dns://127.0.0.1:{port}/big.test", "127.0.0.3"))
    assert outcome.ok, outcome
    assert recording.asked == [("udp", "127.0.0.3"), ("tcp", "127.0.0.3")]


def test_a_resolver_of_the_other_family_is_a_dns_failure():
    response = dns.fetch(target("dns://127.0.0.1:53/ok.test", "::1").request)
    assert response.error_kind == "dns"
    assert response.error == ("cannot ask 127.0.0.1:53 for ok.test A: no IPv6 address to reach from "
                              "source address ::1")


# --- configuration -------------------------------------------------------------------------


def test_the_setting_is_loaded_from_the_environment_and_validated():
    assert config.load({}).check.source_address == ""
    assert config.load({"SITEWATCH_CHECK__SOURCE_ADDRESS": "127.0.0.2"}).check.source_address == "127.0.0.2"
    with pytest.raises(ConfigError) as refused:
        config.load({"SITEWATCH_CHECK__SOURCE_ADDRESS": NOT_HERE})
    assert str(refused.value) == (f"check.source_address: is not an address this host can bind (Cannot assign "
                                  f"requested address), got '{NOT_HERE}' (from env SITEWATCH_CHECK__SOURCE_ADDRESS)")
    with pytest.raises(ConfigError, match="must be an IP address of this host"):
        config.load({"SITEWATCH_CHECK__SOURCE_ADDRESS": "eth0"})


@pytest.mark.parametrize("command", [["check", "http://127.0.0.1:9/"], ["run"]])
@pytest.mark.parametrize("address", [NOT_HERE, "not-an-address"])
def test_an_address_this_host_cannot_bind_stops_run_and_check_with_one_line(tmp_path, command, address):
    # A DSN nobody listens on: the configuration is refused before anything connects.
    env = clean_env(tmp_path, DB_DSN="postgresql://postgres@127.0.0.1:1/none",
                    SITEWATCH_CHECK__SOURCE_ADDRESS=address)
    done = subprocess.run([sys.executable, "-m", "sitewatch", *command], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "check.source_address" in done.stderr and address in done.stderr
    assert done.stdout == ""


def test_sitewatch_check_binds_to_the_configured_address(tmp_path):
    with SourceFilteringServer() as server:
        env = clean_env(tmp_path, SITEWATCH_CHECK__SOURCE_ADDRESS="127.0.0.3")
        done = subprocess.run([sys.executable, "-m", "sitewatch", "check", server.url()], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        assert server.counts() == ({"127.0.0.3": 1}, {})
