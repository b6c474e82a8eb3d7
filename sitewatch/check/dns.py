"""The `dns://` monitor kind: one DNS query, its rcode and answer records.

`dns://[RESOLVER[:PORT]]/NAME?type=A|AAAA|CNAME|MX|NS|TXT|SRV|SOA` (DESIGN.md section 12).
With a RESOLVER (an IP address or a host name; port 53 by default), that server is asked
directly: UDP, then TCP when the reply is truncated. Without one (`dns:///NAME`), the
system's resolvers (/etc/resolv.conf) are asked in turn, as a stub resolver would: the next
is tried when one does not answer or answers SERVFAIL or REFUSED. The query asks for
recursion. Everything, including looking up a RESOLVER given by name, fits in the check's
one total deadline (`request.timeout`).

What `fetch` reports, and who judges it:
* A transport failure is the Response's error_kind: no reply from any resolver before the
  deadline is `timeout`; a RESOLVER name that does not resolve is `dns`; a socket error is
  `connect`; a malformed reply is `protocol`; the monitor's own shortage (descriptors,
  memory) or no system resolver configured is `monitor`.
* Any reply is a transport success. Its rcode and records go into `Response.values`:
  `("rcode", "NXDOMAIN")`, `("answer", ("192.0.2.1", ...))`, and `("question",
  "example.com A")`, the query in words, for messages only (not a subject).
* The verdict is probe.judge's. Without an `assert` on `rcode`, the default expectation
  is `default_failure` below: rcode NOERROR, and (without an `assert` on `answer` or
  `len(answer)` either) at least one record, as Gatus and Uptime Kuma users expect: a
  name that vanished or lost its records is down. Such a failure's error_kind is `dns`.
  So `--assert 'rcode == NXDOMAIN'` checks that a name does NOT exist, and
  `--assert 'len(answer) == 0'` that it has no record of the type.

The records are their presentation text (what `dig +short` prints), sorted, so a result
does not change with a resolver's rotation, with two changes that make assertions read
naturally: names have no final dot (`10 mail.example.com`), and a TXT record is its
strings joined, unquoted (`v=spf1 -all`), as SPF and DKIM read it. Only the records of the
asked type are listed (a CNAME followed on the way to an A record is not).
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import os
import socket
import time
from dataclasses import dataclass
from secrets import randbits
from urllib.parse import unquote, urlsplit

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.wire

from sitewatch.errors import BadInput
from sitewatch.urlspec import MAX_URL_LENGTH

from .address import normalise_host
from .deadline import Deadline
from .engine import (
    Request,
    Response,
    Timings,
    address_version,
    failed,
    monitor_failure,
    never_raises,
    unexpected,
    url_secrets,
)
from .resolve import resolve
from .steps import READ, WRITE, Wait, run

SCHEME = "dns"
SUBJECTS = frozenset({"rcode", "answer", "response_time"})  # len(answer) is implied by answer
TYPES = ("A", "AAAA", "CNAME", "MX", "NS", "TXT", "SRV", "SOA")
DEFAULT_TYPE = "A"
DEFAULT_PORT = 53
# A stub resolver moves on to the next server on these rcodes (this server cannot answer
# now); NXDOMAIN and NOERROR are answers about the name, the same from every server.
_TRY_NEXT_RCODES = ("SERVFAIL", "REFUSED")
# A reply with one of these rcodes may leave the question out (dnspython's is_response).
_MAY_OMIT_QUESTION = ("FORMERR", "SERVFAIL", "NOTIMP", "REFUSED")
HEADER_BYTES = 12
MAX_UDP_REPLY = 65535
# Queries kept built, one per dns:// URL a process checks (a few hundred bytes each).
QUERIES_KEPT = 16384


# --------------------------------------------------------------------------- the URL


def _resolver_host(host: str) -> str:
    """The RESOLVER part, validated: an IP address, or a host name (address.normalise_host's
    rules, as for tcp:// and tls://), without a final dot."""
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        pass
    try:
        if ":" in host:     # not an IPv6 address (urlsplit refuses most first); never bracket it
            raise BadInput(host)
        return normalise_host(host).removesuffix(".")
    except BadInput:
        raise BadInput(f"dns:// resolver {host!r} is not an IP address or a valid host name") from None


def _query_name(text: str) -> str:
    """NAME, validated: IDNA to ASCII, lower-cased, no final dot (underscores allowed, as SRV needs)."""
    if not text:
        raise BadInput("dns:// URL has no name to resolve: write dns:///NAME (the system's resolvers) "
                       "or dns://RESOLVER/NAME")
    if "/" in text:
        raise BadInput(f"dns:// name {text!r} contains a '/': the URL is dns://[RESOLVER[:PORT]]/NAME?type=TYPE")
    try:
        name = dns.name.from_unicode(text.lower())
    except (dns.exception.DNSException, UnicodeError) as exc:
        raise BadInput(f"dns:// name {text!r} is not a valid DNS name: {exc}") from None
    if name == dns.name.root:
        raise BadInput("dns:// name is the root '.': give a name such as example.com")
    return name.to_text(omit_final_dot=True).lower()


def _query_type(query: str) -> str:
    fields = [part.partition("=") for part in query.split("&") if part]
    keys = [key for key, _, _ in fields]
    if any(key != "type" for key in keys) or len(keys) > 1:
        raise BadInput(f"dns:// URL takes only ?type=TYPE, got ?{query}")
    if not fields:
        return DEFAULT_TYPE
    wanted = fields[0][2].upper()
    if wanted not in TYPES:
        raise BadInput(f"dns:// type must be one of {', '.join(TYPES)}, got {fields[0][2]!r}")
    return wanted


def _parts(url: str) -> tuple[str | None, int, str, str]:
    """(resolver or None, port, name, type) of a dns:// URL; raises BadInput."""
    if not isinstance(url, str):
        raise BadInput(f"URL must be text, got {type(url).__name__}")
    if len(url) > MAX_URL_LENGTH:
        raise BadInput(f"URL is longer than {MAX_URL_LENGTH} characters ({len(url)})")
    if not url.isprintable() or " " in url:
        raise BadInput("URL contains whitespace or a control character")
    if not url.lower().startswith("dns://"):
        raise BadInput("a dns:// URL must start with dns://")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise BadInput(f"dns:// URL is malformed: {exc}") from None
    try:
        port = parts.port
    except ValueError:
        raise BadInput("dns:// resolver port must be a number between 1 and 65535") from None
    if "@" in parts.netloc:
        raise BadInput("dns:// URL takes no user or password")
    if parts.fragment:
        raise BadInput("dns:// URL takes no #fragment")
    if port == 0:
        raise BadInput("dns:// resolver port must be between 1 and 65535, got 0")
    resolver = _resolver_host(parts.hostname) if parts.hostname else None
    if resolver is None and port is not None:
        raise BadInput("dns:// URL has a port but no resolver: write dns://RESOLVER:PORT/NAME")
    return resolver, port or DEFAULT_PORT, _query_name(unquote(parts.path[1:])), _query_type(parts.query)


def normalise(url: str) -> str:
    """The canonical form: lower-case, IDNA names, no default port (53) and no default type (A).

    `DNS://8.8.8.8:53/Example.COM.?type=a` -> `dns://8.8.8.8/example.com`. Raises BadInput.
    """
    resolver, port, name, rdtype = _parts(url)
    netloc = ""
    if resolver is not None:
        netloc = f"[{resolver}]" if ":" in resolver else resolver
        if port != DEFAULT_PORT:
            netloc += f":{port}"
    query = "" if rdtype == DEFAULT_TYPE else f"?type={rdtype}"
    return f"dns://{netloc}/{name}{query}"


# --------------------------------------------------------------------------- the query


@dataclass(frozen=True)
class _Query:
    """What every check of one dns:// URL asks, built once per URL (QUERIES_KEPT at most): a
    monitor asks the same question every period, and parsing the URL and rendering the query
    with dnspython cost more CPU than the exchange (docs/benchmarks.md, "Monitor kinds")."""

    resolver: str | None
    port: int
    question: str           # "example.com A", for messages
    rdtype: int
    wire: bytes             # header and question, ID 0: each ask puts a fresh random ID in front
    servers: tuple | None   # ((address, port),) when RESOLVER is an IP address: nothing to look up


@functools.lru_cache(maxsize=QUERIES_KEPT)
def _query(url: str) -> _Query:
    """The _Query of a dns:// URL; raises BadInput (not kept)."""
    resolver, port, name, type_text = _parts(url)
    rdtype = dns.rdatatype.from_text(type_text)
    message = dns.message.make_query(dns.name.from_text(name), rdtype)  # recursion desired, no EDNS
    message.id = 0
    servers = ((resolver, port),) if resolver is not None and _is_address(resolver) else None
    return _Query(resolver, port, f"{name} {type_text}", rdtype, message.to_wire(), servers)


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def record_text(rdata) -> str:
    """One record as a subject value: presentation text, names without the final dot, TXT unquoted."""
    if rdata.rdtype == dns.rdatatype.TXT:
        return b"".join(rdata.strings).decode("utf-8", errors="replace")
    return rdata.to_text(origin=dns.name.root, relativize=True)


def _read(reply: bytes, sent: bytes, rdtype: int) -> tuple[str, tuple[str, ...], bool]:
    """(rcode, answer, truncated) of `reply` to the query `sent`.

    Raises a DNSException when the reply is malformed or answers another query (dnspython's
    Message.is_response rules: our ID, QR set, opcode QUERY, our question echoed, or none with
    an error rcode). Only the header, the question and the answer section are read, with
    dnspython's parser and record types: the authority and additional sections say nothing a
    subject shows, and reading every section into a dns.message.Message was the largest part
    of a check's CPU. A record repeated under one name counts once, as in an RRset.
    """
    parser = dns.wire.Parser(reply)
    _, flags, questions, answers, _, _ = parser.get_struct("!HHHHHH")
    rcode = dns.rcode.to_text(dns.rcode.from_flags(flags, 0))  # no EDNS asked, so none extended
    echoed = questions == 1 and reply[HEADER_BYTES:len(sent)].lower() == sent[HEADER_BYTES:].lower()
    if reply[:2] != sent[:2] or not flags & dns.flags.QR or dns.opcode.from_flags(flags) != dns.opcode.QUERY \
            or not (echoed or questions == 0 and rcode in _MAY_OMIT_QUESTION):
        raise dns.query.BadResponse
    if flags & dns.flags.TC:
        return rcode, (), True
    parser.seek(len(sent) if questions else HEADER_BYTES)
    records = set()
    for _ in range(answers):
        owner = parser.get_name(decompress=True)
        rrtype, rrclass, _, length = parser.get_struct("!HHIH")
        if rrtype == rdtype and rrclass == dns.rdataclass.IN:
            with parser.restrict_to(length):
                records.add((owner, record_text(dns.rdata.from_wire_parser(rrclass, rrtype, parser))))
        else:
            parser.seek(parser.current + length)
    return rcode, tuple(sorted(text for _, text in records)), False


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _udp(wire: bytes, address: str, port: int, deadline: Deadline, source: str | None):
    """Steps: one datagram out, the first one back. Connected, so the kernel passes only the
    server's datagrams (a stray one from elsewhere never reaches us), and a closed port is
    refused at once."""
    with socket.socket(_family(address), socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        if source:
            sock.bind((source, 0))
        sock.connect((address, port))
        sock.send(wire)
        while True:
            try:
                return sock.recv(MAX_UDP_REPLY)
            except BlockingIOError:
                if not (yield Wait(sock.fileno(), READ, deadline.at)):
                    raise TimeoutError("total deadline passed") from None


def _tcp(wire: bytes, address: str, port: int, deadline: Deadline, source: str | None):
    """Steps: the query again over TCP (RFC 1035 4.2.2: a two-byte length before each message)."""
    with socket.socket(_family(address), socket.SOCK_STREAM) as sock:
        sock.setblocking(False)
        if source:
            sock.bind((source, 0))
        error = sock.connect_ex((address, port))
        if error == errno.EINPROGRESS:
            if not (yield Wait(sock.fileno(), WRITE, deadline.at)):
                raise TimeoutError("total deadline passed")
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            raise OSError(error, os.strerror(error))
        view = memoryview(len(wire).to_bytes(2, "big") + wire)
        while view:
            try:
                view = view[sock.send(view):]
            except BlockingIOError:
                if not (yield Wait(sock.fileno(), WRITE, deadline.at)):
                    raise TimeoutError("total deadline passed") from None
        length = int.from_bytes((yield from _receive(sock, 2, deadline)), "big")
        return (yield from _receive(sock, length, deadline))


def _receive(sock: socket.socket, size: int, deadline: Deadline):
    data = bytearray()
    while len(data) < size:
        try:
            chunk = sock.recv(size - len(data))
        except BlockingIOError:
            if not (yield Wait(sock.fileno(), READ, deadline.at)):
                raise TimeoutError("total deadline passed") from None
            continue
        if not chunk:
            raise dns.exception.FormError("the server closed the TCP connection before the whole reply")
        data += chunk
    return bytes(data)


def _ask(query: _Query, address: str, port: int, deadline: Deadline, source: str | None = None):
    """Steps: one server, UDP, and TCP again when the reply is truncated, both within the
    deadline, from the host's source address when it has one. Returns (rcode, answer)."""
    sent = randbits(16).to_bytes(2, "big") + query.wire[2:]   # a fresh ID per query
    rcode, answer, truncated = _read((yield from _udp(sent, address, port, deadline, source)), sent, query.rdtype)
    if truncated:
        rcode, answer, truncated = _read((yield from _tcp(sent, address, port, deadline, source)), sent,
                                         query.rdtype)
    return rcode, answer


def _reachable(servers: list[tuple[str, int]], source: str) -> list[tuple[str, int]]:
    """The servers a socket bound to `source` can reach: those of its IP version."""
    version = address_version(source)
    return [server for server in servers if address_version(server[0]) == version]


def _servers(query: _Query, deadline: Deadline) -> tuple | list:
    """(address, port) to ask in turn: the named resolver's addresses, or the system's resolvers."""
    if query.servers is not None:
        return query.servers
    if query.resolver is None:
        system = dns.resolver.get_default_resolver()  # read once per process, as a stub resolver does
        return [(str(server), system.port) for server in system.nameservers]
    infos = resolve(query.resolver, query.port, deadline)  # bounded by the deadline
    addresses = dict.fromkeys(info[4][0] for info in infos)  # each once, in the system's order
    return [(address, query.port) for address in addresses]


def steps_on_loop(request: Request) -> bool:
    """Whether the check runs on the curl loop: not when its RESOLVER is a host name, which is
    looked up first, blocking (resolve.py); that check runs on a thread."""
    try:
        query = _query(request.url)
    except BadInput:
        return False
    return query.servers is not None or query.resolver is None


def steps(request: Request):
    """The check as steps (steps.py), for the curl loop. Returns the Response; never raises."""
    secrets = url_secrets(request.url) | request.secrets
    try:
        return (yield from _steps(request, secrets))
    except Exception as exc:
        return unexpected(exc, "the name", secrets)


# Called as fetch(request): never_raises gathers the secrets and turns any exception into a
# classified failure (engine.py), so a bug here cannot crash the worker.
@never_raises("the name")
def fetch(request: Request, secrets: set[str]) -> Response:
    """The check on this thread (the urllib3 engine's consumers, `sitewatch check`)."""
    return run(_steps(request, secrets))


def _steps(request: Request, secrets: set[str]):
    deadline = Deadline(request.timeout)
    try:
        query = _query(request.url)
    except BadInput as exc:  # normalise() refuses these before they are stored
        return failed("protocol", str(exc), secrets)
    question, resolver = query.question, query.resolver
    where = f"{resolver}:{query.port}" if resolver else "the system's resolvers"
    try:
        servers = _servers(query, deadline)
    except dns.resolver.NoResolverConfiguration:
        return failed("monitor", "monitor failure: no system DNS resolver is configured (/etc/resolv.conf); "
                      "the name was not checked", secrets)
    except TimeoutError:
        return failed("timeout", f"timed out after {request.timeout:g} s resolving the resolver {resolver}",
                      secrets)
    except OSError as exc:
        exhausted = monitor_failure(exc)
        if exhausted:
            return failed("monitor", f"monitor failure: {exhausted}; the name was not checked", secrets)
        return failed("dns", f"cannot resolve the resolver {resolver}: {exc.strerror or exc}", secrets)
    source = request.source_address
    if source:
        servers = _reachable(servers, source)
        if not servers:
            return failed("dns", f"cannot ask {where} for {question}: no IPv{address_version(source)} address "
                          f"to reach from source address {source}", secrets)
    reply = problem = None
    try:
        for index, (address, server_port) in enumerate(servers):
            try:
                # This server's share of the time left: one that never answers leaves time for the next.
                share = Deadline(deadline.left() / (len(servers) - index))
                reply = yield from _ask(query, address, server_port, share, source)
            except TimeoutError:
                continue
            except OSError as exc:
                if monitor_failure(exc):
                    raise
                problem = f"{address}:{server_port}: {exc.strerror or exc}"
                continue
            if reply[0] not in _TRY_NEXT_RCODES:
                break
    except OSError as exc:  # only the monitor's own failures get here
        return failed("monitor", f"monitor failure: {monitor_failure(exc)}; the name was not checked", secrets)
    except dns.exception.DNSException as exc:  # FormError, BadResponse...
        return failed("protocol", f"malformed reply from {where} for {question}: {exc}", secrets)
    if reply is None and problem is not None:  # a socket error, and no server answered
        return failed("connect", f"cannot ask {where} for {question}: {problem}", secrets)
    if reply is None:
        return failed("timeout", f"no answer from {where} within {request.timeout:g} s for {question}", secrets)
    elapsed_ms = (time.monotonic() - deadline.start) * 1000
    values = (("rcode", reply[0]), ("answer", reply[1]), ("question", question))
    return Response(status=None, headers=(), body=None, redirects=0, cert_days_left=None,
                    response_time_ms=elapsed_ms, timings=Timings(dns_ms=elapsed_ms), error_kind=None,
                    error=None, values=values)


# --------------------------------------------------------------------------- the default verdict


def default_failure(values, asserted: frozenset[str] = frozenset()) -> str | None:
    """Why a reply fails when the user's assertions do not say otherwise; None when it passes.

    `values` is Response.values (pairs, or a dict); `asserted` the subjects the monitor's
    `assert` expressions name (`rcode`, `answer`, `len(answer)`...). Its `degraded` ones do
    not count: they cannot turn a down result into an up one. Pure: the caller (probe.judge)
    records a message returned here as error_kind `dns`.
    """
    found = dict(values)
    if "rcode" in asserted:
        return None  # the user says which rcode is right (NXDOMAIN may be the point)
    question = found.get("question", "the name")
    if found["rcode"] != "NOERROR":
        return f"{found['rcode']} for {question}"
    if not found["answer"] and not ({"answer", "len(answer)"} & asserted):
        return f"no records for {question} (NOERROR, empty answer)"
    return None
