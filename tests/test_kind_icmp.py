"""The icmp:// monitor kind (sitewatch/check/icmp.py): real echo requests on real sockets.

This host forbids unprivileged ICMP sockets (net.ipv4.ping_group_range "1 0", Debian's
default), so the first test shows the clear refusal. The replies themselves are tested in a
fresh user and network namespace (`unshare`), where we may set that sysctl: loopback
answers, a host that ignores echo requests loses them all, and a network with no route
cannot be sent to. No mocks: icmplib's unprivileged sockets and the kernel's replies.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sitewatch.check import icmp
from sitewatch.check.engine import Request
from sitewatch.errors import BadInput

TIMEOUT = 1.0
MARGIN = 1.0  # on top of the timeout: a bound that guards a hang, not a speed claim


def _forbidden_here() -> str | None:
    """The sysctl's value when it forbids unprivileged ICMP to all our groups (read here, not by
    the code under test), else None."""
    try:
        setting = " ".join(Path("/proc/sys/net/ipv4/ping_group_range").read_text().split())
    except OSError:
        return None
    low, high = (int(gid) for gid in setting.split())
    return None if any(low <= gid <= high for gid in {os.getgid(), *os.getgroups()}) else setting


def test_where_the_system_forbids_unprivileged_icmp_the_check_is_a_monitor_failure():
    setting = _forbidden_here()
    if setting is None:
        pytest.skip("this host allows unprivileged ICMP sockets (see the namespace tests)")
    reason = icmp.available()
    assert reason == (f"unprivileged ICMP sockets are not allowed for this process's group (gid {os.getgid()}): "
                      f'net.ipv4.ping_group_range is "{setting}"; '
                      'allow it with: sysctl -w net.ipv4.ping_group_range="0 2147483647"')
    response = icmp.fetch(Request(url="icmp://127.0.0.1", timeout=TIMEOUT))
    assert response.error_kind == "monitor"  # the monitor cannot check: not the host down
    assert response.error == f"monitor failure: {reason}; the host was not checked"
    assert response.response_time_ms is None
    assert response.values == ()


def test_an_address_outside_the_monitors_ip_version_is_not_pinged():
    response = icmp.fetch(Request(url="icmp://127.0.0.1", timeout=TIMEOUT, ip_version=6))
    assert response.error_kind == "dns"
    assert response.error == "127.0.0.1 has no IPv6 address (ip-version 6)"


# --------------------------------------------------------------------------- inside a namespace

# Runs as root of a new user namespace, in a new network namespace: lo up, unprivileged ICMP
# allowed for our group. Each case prints its Response's essentials and the time it took.
NAMESPACE_SCRIPT = """
import json, pathlib, socket, time
from sitewatch.check import icmp
from sitewatch.check.engine import Request

def ping(url, timeout, source=None):
    started = time.monotonic()
    response = icmp.fetch(Request(url=url, timeout=timeout, source_address=source))
    return {"error_kind": response.error_kind, "error": response.error, "values": dict(response.values),
            "response_time_ms": response.response_time_ms, "dns_ms": response.timings.dns_ms,
            "elapsed": time.monotonic() - started}

timeout = float(__import__("sys").argv[1])
results = {"available": icmp.available()}
results["loopback"] = ping("icmp://127.0.0.1", timeout)
results["loopback6"] = ping("icmp://[::1]", timeout)
results["name"] = ping("icmp://localhost", timeout)
results["no_route"] = ping("icmp://192.0.2.1", timeout)
results["no_such_name"] = ping("icmp://no-such-host.invalid", timeout)
# check.source_address: a raw socket (root of this namespace may open one) sees the echo
# requests' source address in their IP header.
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
raw.settimeout(0.2)
results["sourced"] = ping("icmp://127.0.0.1", timeout, "127.0.0.3")
sources = []
try:
    while True:
        packet = raw.recv(65535)
        if packet[(packet[0] & 15) * 4] == 8:      # the ICMP type after the IP header: echo request
            sources.append(socket.inet_ntoa(packet[12:16]))
except TimeoutError:
    pass
raw.close()
results["sourced"]["echo_request_sources"] = sources
results["sourced_other_family"] = ping("icmp://[::1]", timeout, "127.0.0.3")
# From here on this namespace's IPv4 stack ignores echo requests, as a firewalled host does.
pathlib.Path("/proc/sys/net/ipv4/icmp_echo_ignore_all").write_text("1")
results["ignored"] = ping("icmp://127.0.0.1", timeout)
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def pinged():
    """The namespace script's results, by case; skipped where no such namespace can be made."""
    setup = ('ip link set lo up && echo "0 0" > /proc/sys/net/ipv4/ping_group_range'
             ' && exec "$0" -c "$1" "$2"')
    command = ["unshare", "--user", "--map-root-user", "--net", "sh", "-c", setup,
               sys.executable, NAMESPACE_SCRIPT, str(TIMEOUT)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60,
                              cwd=Path(__file__).resolve().parent.parent)
    except FileNotFoundError:
        pytest.skip("unshare is not installed")
    if done.returncode != 0:
        if "Traceback" in done.stderr:
            raise AssertionError(done.stderr)
        pytest.skip(f"cannot make a user and network namespace with ICMP allowed: {done.stderr.strip()[-200:]}")
    return json.loads(done.stdout)


def test_where_allowed_available_says_nothing(pinged):
    assert pinged["available"] is None


@pytest.mark.parametrize("case", ["loopback", "loopback6"])
def test_a_host_that_answers_has_no_loss_and_a_mean_round_trip(pinged, case):
    result = pinged[case]
    assert result["error_kind"] is None, result["error"]
    assert result["values"] == {"loss": 0.0}
    assert 0 < result["response_time_ms"] < TIMEOUT * 1000
    assert result["dns_ms"] is None  # an address: nothing looked up


def test_a_host_name_is_looked_up_first(pinged):
    result = pinged["name"]
    assert result["error_kind"] is None, result["error"]
    assert result["values"] == {"loss": 0.0}
    assert result["dns_ms"] is not None


def test_a_host_that_ignores_echo_requests_loses_them_all_within_the_deadline(pinged):
    result = pinged["ignored"]
    assert result["error_kind"] == "timeout"
    assert result["error"] == "no echo reply from 127.0.0.1 within 1 s: 3 of 3 requests lost (100% loss)"
    assert result["values"] == {"loss": 100.0}
    assert result["response_time_ms"] is None
    assert result["elapsed"] < TIMEOUT + MARGIN


def test_a_network_with_no_route_cannot_be_sent_to(pinged):
    result = pinged["no_route"]
    assert result["error_kind"] == "connect"
    assert result["error"] == "cannot send an echo request to 192.0.2.1: [Errno 101] Network is unreachable"


def test_echo_requests_are_sent_from_the_source_address(pinged):
    result = pinged["sourced"]
    assert result["error_kind"] is None, result["error"]
    assert result["values"] == {"loss": 0.0}
    assert result["echo_request_sources"] == ["127.0.0.3"] * 3


def test_a_host_of_the_other_family_than_the_source_address_is_a_dns_failure(pinged):
    result = pinged["sourced_other_family"]
    assert result["error_kind"] == "dns"
    assert result["error"] == "::1 has no IPv4 address (source address 127.0.0.3)"


def test_a_host_name_that_does_not_resolve_is_a_dns_failure(pinged):
    result = pinged["no_such_name"]
    assert result["error_kind"] == "dns"
    assert result["error"].startswith("cannot resolve no-such-host.invalid: ")
    assert result["elapsed"] < TIMEOUT + MARGIN


# --------------------------------------------------------------------------- normalise


@pytest.mark.parametrize("given, canonical", [
    ("ICMP://Example.COM/", "icmp://example.com"),
    ("icmp://192.0.2.10", "icmp://192.0.2.10"),
    ("icmp://[2001:DB8:0::1]", "icmp://[2001:db8::1]"),
    ("icmp://bücher.example", "icmp://xn--bcher-kva.example"),
    ("icmp://gateway", "icmp://gateway"),
    # address.normalise_host's rules, as for a tcp:// host: underscores pass, a final dot goes.
    ("icmp://Host_1.LAN.", "icmp://host_1.lan"),
])
def test_normalise_gives_one_canonical_form(given, canonical):
    assert icmp.normalise(given) == canonical
    assert icmp.normalise(canonical) == canonical


@pytest.mark.parametrize("given, message", [
    ("icmp://", "icmp:// URL has no host"),
    ("icmp://example.com:80", "an icmp:// URL takes no port (write IPv6 addresses in brackets), "
                              "got 'icmp://example.com:80'"),
    ("icmp://example.com/ping", "an icmp:// URL is icmp://HOST alone (no port, path, query or user), "
                                "got 'icmp://example.com/ping'"),
    ("icmp://user@example.com", "an icmp:// URL is icmp://HOST alone (no port, path, query or user), "
                                "got 'icmp://user@example.com'"),
    ("icmp://[2001:db8::zz]", "icmp:// host [2001:db8::zz] is not an IPv6 address"),
    ("icmp://bad_host!", "icmp:// host 'bad_host!' is not an IP address or a valid host name"),
    ("icmp://a..example", "icmp:// host 'a..example' is not an IP address or a valid host name"),
    ("icmp://-gw.example", "icmp:// host '-gw.example' is not an IP address or a valid host name"),
    ("ping://example.com", "an icmp:// URL must start with icmp://"),
])
def test_normalise_refuses_bad_input_in_one_line(given, message):
    with pytest.raises(BadInput) as refused:
        icmp.normalise(given)
    assert str(refused.value) == message
