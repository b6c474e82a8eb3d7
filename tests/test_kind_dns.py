"""The dns:// monitor kind (sitewatch/check/dns.py) against a real DNS server on 127.0.0.1.

A dnslib server, started here on a free port (UDP and TCP), serves a small zone; a UDP
socket that reads and never replies stands for a resolver that does not answer. No
mocks: dnspython's real queries, real sockets.
"""

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from dnslib import QTYPE, RCODE, RR, DNSRecord
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from sitewatch.check import choice as engines
from sitewatch.check import dns as dnskind
from sitewatch.check import probe
from sitewatch.check.engine import Request
from sitewatch.errors import BadInput

BIG_TXT_RECORDS = 30  # ~1,800 bytes of TXT: more than the 512 bytes our UDP server sends
ZONE = {
    ("ok.test.", "A"): ["ok.test. 60 IN A 192.0.2.1", "ok.test. 60 IN A 192.0.2.2"],
    ("mail.test.", "MX"): ["mail.test. 60 IN MX 20 mx2.mail.test.", "mail.test. 60 IN MX 10 mx1.mail.test."],
    ("spf.test.", "TXT"): ['spf.test. 60 IN TXT "v=spf1 " "-all"'],
    ("big.test.", "TXT"): [f'big.test. 60 IN TXT "record {n:02d} {"x" * 48}"' for n in range(BIG_TXT_RECORDS)],
    ("www.test.", "A"): ["www.test. 60 IN CNAME ok.test.", "ok.test. 60 IN A 192.0.2.1"],
}
SERVFAIL_NAMES = {"broken.test."}
UDP_LIMIT = 512  # RFC 1035's UDP size without EDNS: a longer reply goes out truncated


class ZoneResolver(BaseResolver):
    """Answers from ZONE; SERVFAIL for SERVFAIL_NAMES; NOERROR with no records for a known name
    asked another type (NODATA); NXDOMAIN for any other name."""

    def resolve(self, request, handler):
        reply = request.reply()
        name, qtype = str(request.q.qname).lower(), QTYPE[request.q.qtype]
        if name in SERVFAIL_NAMES:
            reply.header.rcode = RCODE.SERVFAIL
        elif (name, qtype) in ZONE:
            for line in ZONE[(name, qtype)]:
                reply.add_answer(*RR.fromZone(line))
        elif name not in {known for known, _ in ZONE}:
            reply.header.rcode = RCODE.NXDOMAIN
        if handler.protocol == "udp" and len(reply.pack()) > UDP_LIMIT:
            # As a server does (RFC 2181 section 9): the question kept, no records, TC set.
            # (dnslib's own truncation drops the question too, which dnspython rightly refuses.)
            reply = request.reply()
            reply.header.tc = 1
        return reply


QUIET = DNSLogger(log="-request,-reply,-truncated,-error", prefix=False)


def _free_port_for_udp_and_tcp() -> int:
    while True:
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


@pytest.fixture(scope="module")
def dns_server():
    """The zone on 127.0.0.1:PORT, UDP (truncating past UDP_LIMIT) and TCP; yields the port."""
    port = _free_port_for_udp_and_tcp()
    servers = [DNSServer(ZoneResolver(), address="127.0.0.1", port=port, logger=QUIET),
               DNSServer(ZoneResolver(), address="127.0.0.1", port=port, tcp=True, logger=QUIET)]
    for server in servers:
        server.start_thread()
    yield port
    for server in servers:
        server.stop()
        server.server.server_close()


@pytest.fixture
def silent_resolver():
    """A UDP port that reads every query and never replies; yields (port, the queries read)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    queries, stop = [], threading.Event()

    def swallow():
        while not stop.is_set():
            try:
                queries.append(sock.recv(4096))
            except TimeoutError:
                pass

    thread = threading.Thread(target=swallow, daemon=True)
    thread.start()
    yield sock.getsockname()[1], queries
    stop.set()
    thread.join(5)
    sock.close()


@pytest.fixture
def replying_resolver():
    """A UDP port that answers every query with reply(query) (bytes); yields (port, set_reply)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    stop, chosen = threading.Event(), {}

    def answer():
        while not stop.is_set():
            try:
                query, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            sock.sendto(chosen["reply"](query), peer)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    yield sock.getsockname()[1], lambda reply: chosen.update(reply=reply)
    stop.set()
    thread.join(5)
    sock.close()


@pytest.fixture(params=["thread", "loop"])
def ask(request):
    """ask(port, name, ...): the Response of one dns:// check, on a thread (fetch: the urllib3
    engine's consumers, `sitewatch check`) or on the curl engine's loop (run/transfers.py
    driving the same steps); every test that asks runs both ways and expects the same."""
    if request.param == "loop" and not engines.curl_available():
        pytest.skip("pycurl is not installed")

    def ask(port, name, rdtype=None, timeout=5.0, resolver="127.0.0.1"):
        url = f"dns://{resolver}:{port}/{name}" + (f"?type={rdtype}" if rdtype else "")
        if request.param == "loop":
            from tests.test_transfers import run_all
            return run_all([probe.Target(url, timeout=timeout)], raw=True)[0]
        return dnskind.fetch(Request(url=url, timeout=timeout))
    return ask


# --------------------------------------------------------------------------- fetch


def test_a_records_are_the_answer_and_pass_the_default(dns_server, ask):
    response = ask(dns_server, "ok.test")
    assert response.error_kind is None, response.error
    values = dict(response.values)
    assert values["rcode"] == "NOERROR"
    assert values["answer"] == ("192.0.2.1", "192.0.2.2")
    assert values["question"] == "ok.test A"
    assert response.status is None
    assert response.response_time_ms is not None and response.response_time_ms >= 0
    assert response.timings.dns_ms == response.response_time_ms
    assert dnskind.default_failure(response.values) is None


def test_a_resolver_given_by_host_name_is_looked_up_first(dns_server, ask):
    response = ask(dns_server, "ok.test", resolver="localhost")
    assert response.error_kind is None, response.error
    assert dict(response.values)["answer"] == ("192.0.2.1", "192.0.2.2")


def test_nxdomain_is_a_reply_that_fails_by_default_unless_rcode_is_asserted(dns_server, ask):
    response = ask(dns_server, "missing.test")
    assert response.error_kind is None  # the resolver answered: a transport success
    assert dict(response.values)["rcode"] == "NXDOMAIN"
    assert dict(response.values)["answer"] == ()
    assert dnskind.default_failure(response.values) == "NXDOMAIN for missing.test A"
    # --assert 'rcode == NXDOMAIN': the user expects the name not to exist, so no default verdict.
    assert dnskind.default_failure(response.values, frozenset({"rcode"})) is None


def test_servfail_fails_by_default(dns_server, ask):
    response = ask(dns_server, "broken.test")
    assert response.error_kind is None
    assert dict(response.values)["rcode"] == "SERVFAIL"
    assert dnskind.default_failure(response.values) == "SERVFAIL for broken.test A"


def test_nodata_fails_by_default_unless_the_answer_is_asserted(dns_server, ask):
    response = ask(dns_server, "ok.test", "AAAA")
    assert response.error_kind is None
    assert dict(response.values) == {"rcode": "NOERROR", "answer": (), "question": "ok.test AAAA"}
    assert dnskind.default_failure(response.values) == "no records for ok.test AAAA (NOERROR, empty answer)"
    assert dnskind.default_failure(response.values, frozenset({"len(answer)"})) is None
    assert dnskind.default_failure(response.values, frozenset({"answer"})) is None


def test_a_different_answer_shows_the_actual_records(dns_server, ask):
    """The records an assertion like `answer contains "192.0.2.9"` is judged against, as the server sent them."""
    response = ask(dns_server, "ok.test")
    answer = dict(response.values)["answer"]
    assert "192.0.2.9" not in answer
    assert answer == ("192.0.2.1", "192.0.2.2")


def test_only_records_of_the_asked_type_are_the_answer(dns_server, ask):
    response = ask(dns_server, "www.test")  # CNAME ok.test, then ok.test's A record
    assert dict(response.values)["answer"] == ("192.0.2.1",)


def test_mx_records_read_as_preference_and_name_without_final_dot(dns_server, ask):
    response = ask(dns_server, "mail.test", "MX")
    assert dict(response.values)["answer"] == ("10 mx1.mail.test", "20 mx2.mail.test")


def test_txt_records_read_as_their_strings_joined_unquoted(dns_server, ask):
    response = ask(dns_server, "spf.test", "txt")
    assert dict(response.values)["answer"] == ("v=spf1 -all",)


def test_a_truncated_udp_reply_is_asked_again_over_tcp(dns_server, ask):
    response = ask(dns_server, "big.test", "TXT")
    assert response.error_kind is None, response.error
    answer = dict(response.values)["answer"]
    assert len(answer) == BIG_TXT_RECORDS
    assert answer[0] == "record 00 " + "x" * 48


def test_a_resolver_that_never_answers_is_a_timeout_within_the_deadline(silent_resolver, ask):
    port, queries = silent_resolver
    started = time.monotonic()
    response = ask(port, "ok.test", timeout=1.0)
    elapsed = time.monotonic() - started
    assert response.error_kind == "timeout"
    assert response.error == f"no answer from 127.0.0.1:{port} within 1 s for ok.test A"
    assert response.values == ()
    assert queries, "the query never reached the silent resolver"
    assert elapsed < 1.0 + 1.0  # a bound that guards a hang, not a speed claim


def test_a_malformed_reply_is_a_protocol_failure(replying_resolver, ask):
    port, reply_with = replying_resolver
    reply_with(lambda query: query[:2] + b"\x81\x80 not a DNS message")  # the query's ID, then junk
    response = ask(port, "ok.test", timeout=2.0)
    assert response.error_kind == "protocol"
    assert response.error.startswith(f"malformed reply from 127.0.0.1:{port} for ok.test A: ")


def _answered(query: bytes, *, ident: bytes | None = None, question: bytes | None = None) -> bytes:
    """A NOERROR reply to `query` with one A record, 192.0.2.7; its ID or question replaced if given."""
    reply = DNSRecord.parse(query).reply()
    reply.add_answer(*RR.fromZone(f"{reply.q.qname} 60 IN A 192.0.2.7"))
    wire = reply.pack()
    wire = (ident or wire[:2]) + wire[2:]
    if question is not None:
        wire = wire[:12] + question + wire[12 + len(question):]
    return wire


def test_a_reply_to_another_query_is_a_protocol_failure(replying_resolver, ask):
    """The ID and the question must be ours (a spoofed or stale reply is not the answer)."""
    port, reply_with = replying_resolver
    reply_with(_answered)
    assert dict(ask(port, "ok.test").values)["answer"] == ("192.0.2.7",)
    reply_with(lambda query: _answered(query, ident=bytes([query[0] ^ 0xFF, query[1]])))
    wrong_id = ask(port, "ok.test", timeout=2.0)
    assert wrong_id.error_kind == "protocol", wrong_id.error
    assert wrong_id.error.startswith(f"malformed reply from 127.0.0.1:{port} for ok.test A: ")
    reply_with(lambda query: _answered(query, question=b"\x02ok\x04tesx\x00"))  # same length, other name
    wrong_name = ask(port, "ok.test", timeout=2.0)
    assert wrong_name.error_kind == "protocol", wrong_name.error


def test_each_query_has_its_own_id_and_the_same_question(silent_resolver, ask):
    """The query is built once per URL, but every check sends a fresh random ID (RFC 5452)."""
    port, queries = silent_resolver
    for _ in range(3):
        ask(port, "ok.test", "MX", timeout=0.2)
    assert len(queries) == 3
    assert len({query[:2] for query in queries}) == 3
    assert len({query[2:] for query in queries}) == 1
    assert DNSRecord.parse(queries[0]).q.qname == "ok.test." and QTYPE[DNSRecord.parse(queries[0]).q.qtype] == "MX"


def test_a_closed_resolver_port_is_a_connect_failure(ask):
    """Nothing listening on the resolver's port: the ICMP refusal ends the check at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    response = ask(port, "ok.test", timeout=5.0)
    assert response.error_kind == "connect", response.error
    assert response.error == f"cannot ask 127.0.0.1:{port} for ok.test A: 127.0.0.1:{port}: Connection refused"


def test_the_question_type_is_not_taken_for_a_secret(silent_resolver, dns_server, ask):
    """A dns:// URL's query is its ?type=, not a key: AAAA stays in every message."""
    port, _ = silent_resolver
    timed_out = ask(port, "ok.test", "AAAA", timeout=0.2)
    assert timed_out.error == f"no answer from 127.0.0.1:{port} within 0.2 s for ok.test AAAA"
    url = f"dns://127.0.0.1:{dns_server}/ok.test?type=AAAA"
    outcome = probe.check(probe.Target(url, timeout=5.0))
    assert (outcome.error_kind, outcome.error) == ("dns", "no records for ok.test AAAA (NOERROR, empty answer)")


# --------------------------------------------------------------------------- normalise


@pytest.mark.parametrize("given, canonical", [
    ("DNS://8.8.8.8:53/Example.COM.?type=a", "dns://8.8.8.8/example.com"),
    ("dns:///example.com?type=mx", "dns:///example.com?type=MX"),
    ("dns://[2001:DB8::1]:5353/_sip._tcp.example.com?type=SRV", "dns://[2001:db8::1]:5353/_sip._tcp.example.com?type=SRV"),
    ("dns://NS1.Example.net/bücher.example?type=AAAA", "dns://ns1.example.net/xn--bcher-kva.example?type=AAAA"),
    ("dns://1.1.1.1/example.com?type=SOA", "dns://1.1.1.1/example.com?type=SOA"),
    # The resolver's name follows address.normalise_host, as a tcp:// host does (underscores pass).
    ("dns://NS_1.Example./example.com", "dns://ns_1.example/example.com"),
])
def test_normalise_gives_one_canonical_form(given, canonical):
    assert dnskind.normalise(given) == canonical
    assert dnskind.normalise(canonical) == canonical


@pytest.mark.parametrize("given, message", [
    ("dns://example.com", "dns:// URL has no name to resolve: write dns:///NAME (the system's resolvers) "
                          "or dns://RESOLVER/NAME"),
    ("dns:///example.com?type=PTR", "dns:// type must be one of A, AAAA, CNAME, MX, NS, TXT, SRV, SOA, got 'PTR'"),
    ("dns:///example.com?type=A&class=IN", "dns:// URL takes only ?type=TYPE, got ?type=A&class=IN"),
    ("dns://8.8.8.8:0/example.com", "dns:// resolver port must be between 1 and 65535, got 0"),
    ("dns://8.8.8.8:65536/example.com", "dns:// resolver port must be a number between 1 and 65535"),
    ("dns://bad_host!/example.com", "dns:// resolver 'bad_host!' is not an IP address or a valid host name"),
    ("dns://-ns.example/example.com", "dns:// resolver '-ns.example' is not an IP address or a valid host name"),
    ("dns:///a..example.com", "dns:// name 'a..example.com' is not a valid DNS name: A DNS label is empty."),
    ("dns:///" + "a" * 64 + ".com", "dns:// name '" + "a" * 64 + ".com' is not a valid DNS name: "
                                    "A DNS label is > 63 octets long."),
    ("dns://user@8.8.8.8/example.com", "dns:// URL takes no user or password"),
    ("dns://:5353/example.com", "dns:// URL has a port but no resolver: write dns://RESOLVER:PORT/NAME"),
    ("dns:///example.com/www", "dns:// name 'example.com/www' contains a '/': the URL is "
                               "dns://[RESOLVER[:PORT]]/NAME?type=TYPE"),
    ("http://example.com/", "a dns:// URL must start with dns://"),
])
def test_normalise_refuses_bad_input_in_one_line(given, message):
    with pytest.raises(BadInput) as refused:
        dnskind.normalise(given)
    assert str(refused.value) == message


# --------------------------------------------------------------------------- the system's resolvers

SYSTEM_RESOLVERS_SCRIPT = """
import json, sys
from dnslib.server import DNSServer
from tests.test_kind_dns import QUIET, ZoneResolver
from sitewatch.check import dns
from sitewatch.check.engine import Request
DNSServer(ZoneResolver(), address="127.0.0.1", port=53, logger=QUIET).start_thread()
response = dns.fetch(Request(url=sys.argv[1], timeout=2.0))
print(json.dumps({"error_kind": response.error_kind, "error": response.error, "values": dict(response.values)}))
"""


def test_without_a_resolver_the_systems_are_asked_in_turn(tmp_path):
    """dns:///NAME asks /etc/resolv.conf's servers. In a private mount and network namespace (we
    are root), that file lists a silent 127.0.0.2 first, then our zone on 127.0.0.1:53: the first
    gets its share of the deadline, the second answers."""
    resolv_conf = tmp_path / "resolv.conf"
    resolv_conf.write_text("nameserver 127.0.0.2\nnameserver 127.0.0.1\n")
    command = ["unshare", "--mount", "--net", "sh", "-c",
               f'ip link set lo up && mount --bind "{resolv_conf}" /etc/resolv.conf && exec "$0" -c "$1" "$2"',
               sys.executable, SYSTEM_RESOLVERS_SCRIPT, "dns:///ok.test"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30,
                              cwd=Path(__file__).resolve().parent.parent)
    except FileNotFoundError:
        pytest.skip("unshare is not installed")
    if done.returncode != 0 and not done.stdout:
        pytest.skip(f"cannot make a private mount and network namespace here: {done.stderr.strip()[-200:]}")
    result = json.loads(done.stdout)
    assert result["error_kind"] is None, result["error"]
    assert result["values"]["answer"] == ["192.0.2.1", "192.0.2.2"]
