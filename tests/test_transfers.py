"""run/transfers.py: every hostile case at once on one CurlMulti loop, judged as the engines judge it."""

import threading
import time

import pytest

from sitewatch.check import choice as engines
from sitewatch.check.probe import Target
from tests.test_engines_hostile import CASES, TIMEOUT
from tests.test_kind_dns import dns_server  # noqa: F401  (fixture)
from tests.test_probe import tls_server  # noqa: F401  (fixture)

pytestmark = [pytest.mark.serverless,
              pytest.mark.skipif(not engines.curl_available(), reason="pycurl is not installed")]


def _loop_threads() -> set:
    return {thread for thread in threading.enumerate() if thread.name == "curl-transfers"}


def run_all(targets: list[Target], timeout: float = 30, raw: bool = False) -> list:
    """The outcomes of `targets`, all checked at once on one loop; with `raw`, the Responses
    the loop judged (a kind's subjects, which an Outcome does not carry)."""
    from sitewatch.run.transfers import CurlTransfers

    class Recording(CurlTransfers):
        def _judged(self, task, target, response, started_at, t0):
            responses[task] = response
            super()._judged(task, target, response, started_at, t0)

    outcomes: dict[int, object] = {}
    responses: dict[int, object] = {}
    all_done = threading.Event()
    # Found by name: the server fixtures' handler threads come and go meanwhile (CI once saw one end
    # as the loop's began, and a count of all threads stayed level). Compared as sets, not counts:
    # the previous test's loop may still be ending (seen: it ended between the two looks).
    loops_before = _loop_threads()

    def on_start(task):
        return time.monotonic()

    def on_done(task, outcome, t0):
        outcomes[task] = outcome
        if len(outcomes) == len(targets):
            all_done.set()

    transfers = Recording(on_start, on_done)
    try:
        assert transfers.ensure(len(targets))
        assert transfers.size == 1 and len(_loop_threads() - loops_before) == 1  # one thread for all
        for index, target in enumerate(targets):
            transfers.submit(index, target)
        assert all_done.wait(timeout), f"{len(outcomes)} of {len(targets)} done"
    finally:
        transfers.stop()
    return [(responses if raw else outcomes)[index] for index in range(len(targets))]


@pytest.mark.parametrize("poller", ["default", "selectors"])
def test_every_hostile_case_at_once_on_one_loop(hostile_server, poller, monkeypatch):
    from sitewatch.run import transfers
    if poller == "selectors":     # what macOS runs (kqueue); Linux runs epoll directly
        monkeypatch.setattr(transfers, "POLLER", transfers._Selector)
    targets = [Target(hostile_server.url(path), **{"timeout": TIMEOUT, **options}) for path, options, _, _ in CASES]
    outcomes = run_all(targets)
    got = [(o.ok, o.error_kind) for o in outcomes]
    assert got == [(ok, kind) for _, _, ok, kind in CASES]
    assert all(o.timings.dns_ms is not None for o in outcomes if o.ok)


def test_tls_redirects_and_the_certificate_look_on_the_loop(hostile_server, tls_server):  # noqa: F811
    targets = [
        Target(tls_server.url("/ok"), timeout=TIMEOUT),                       # verification fails: a second look
        Target(tls_server.url("/ok"), verify_tls=False, regex="hello"),
        Target(hostile_server.url("/redirect-to?" + tls_server.url("/echo-headers"), userinfo="alice:s3cret"),
               verify_tls=False, regex="(?i)authorization: Basic YWxpY2U6czNjcmV0"),
    ]
    failed, unverified, redirected = run_all(targets)
    assert failed.error_kind == "tls" and failed.cert_days_left in (29, 30)
    assert unverified.ok and unverified.cert_days_left in (29, 30) and unverified.timings.tls_ms is not None
    assert redirected.ok, redirected


def test_a_stopped_loop_hands_back_what_it_did_not_start():
    from sitewatch.run.transfers import CurlTransfers

    transfers = CurlTransfers(lambda task: 0.0, lambda task, outcome, t0: None)
    transfers.submit("a", Target("http://127.0.0.1:9/"))
    transfers.submit("b", Target("http://127.0.0.1:9/"))
    assert [task for task, _ in transfers.take_unstarted()] == ["a", "b"]  # never started: both returned
    transfers.stop()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_loop_that_dies_says_why_for_the_consumer_to_stop_beating():
    """A bug in the loop thread ends every check in flight: `died` is what the consumer reads
    (it logs it and stops beating, so the supervisor replaces it), redacted."""
    from sitewatch.run.transfers import CurlTransfers

    def on_start(task):
        raise RuntimeError("a bug of ours near http://alice:s3cret@example.test/")

    transfers = CurlTransfers(on_start, lambda task, outcome, t0: None)
    assert transfers.died is None and transfers.ensure(1)
    transfers.submit("a", Target("http://127.0.0.1:9/"))
    deadline = time.monotonic() + 10
    while transfers.died is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert transfers.died is not None and transfers.died.startswith("RuntimeError: a bug of ours")
    assert "s3cret" not in transfers.died
    transfers.stop()


def _kind_target(url, **options):
    """A monitor of another kind, as a consumer builds its target (validated options, stored form)."""
    from sitewatch import config
    from sitewatch.check import definition
    from sitewatch.urlspec import make_entry
    cfg = config.load({}, {}, None)
    entry = make_entry({"url": url, "timeout": TIMEOUT, **options}, cfg.check)
    return definition.target_for(entry.as_row(), cfg.check.max_body_bytes)


def test_tcp_and_dns_checks_share_the_loop_with_http(hostile_server, dns_server):  # noqa: F811
    """Dozens of tcp:// and dns:// checks in flight at once beside HTTP transfers on the one loop
    thread: each judged as on a thread, the silent ones cut at their own deadlines."""
    from tests.kindservers import StreamServer, ping_pong, silent
    talking, quiet = StreamServer(ping_pong), StreamServer(silent)
    try:
        targets = ([_kind_target(talking.url(), send=r"PING\n", expect="^PONG") for _ in range(40)]
                   + [_kind_target(f"dns://127.0.0.1:{dns_server}/ok.test") for _ in range(40)]
                   + [_kind_target(f"dns://127.0.0.1:{dns_server}/big.test?type=TXT") for _ in range(5)]  # TCP too
                   + [Target(hostile_server.url("/ok"), timeout=TIMEOUT) for _ in range(20)]
                   + [_kind_target(quiet.url(), send=r"PING\n", expect="^PONG", timeout=1) for _ in range(5)])
        outcomes = run_all(targets)
    finally:
        talking.close()
        quiet.close()
    got = [(outcome.ok, outcome.error_kind) for outcome in outcomes]
    assert got == [(True, None)] * 105 + [(False, "timeout")] * 5, got
    assert len(talking.received) == 40 and set(talking.received) == {b"PING\n"}


def test_only_what_cannot_block_the_loop_runs_on_it(dns_server):  # noqa: F811
    """tcp:// and dns:// to an address go to the loop; a dns:// resolver named by a host name is
    looked up first, blocking, and tls:// blocks in its handshake: those run on threads."""
    from sitewatch.check.engine import Request
    from sitewatch.check.probe import check as probe_check
    from sitewatch.run.dispatch import CurlAndThreads
    from sitewatch.run.transfers import CurlTransfers, runs_on_loop

    on_loop = ["http://127.0.0.1/", "tcp://127.0.0.1:25", "dns://127.0.0.1/ok.test", "dns:///ok.test"]
    on_threads = ["dns://localhost/ok.test", "tls://127.0.0.1:443"]
    assert [runs_on_loop(Request(url)) for url in on_loop + on_threads] == [True] * 4 + [False] * 2

    done = threading.Event()
    outcomes = {}

    def on_done(task, outcome, t0):
        outcomes[task] = outcome
        if len(outcomes) == 2:
            done.set()

    def on_thread(task, target):
        on_done(task, probe_check(target), 0.0)

    dispatch = CurlAndThreads(CurlTransfers(lambda task: 0.0, on_done), on_thread)
    try:
        dispatch.submit("by address", _kind_target(f"dns://127.0.0.1:{dns_server}/ok.test"))
        assert dispatch.ensure(1) and dispatch.threads.size == 0      # no thread for a check on the loop
        dispatch.submit("by name", _kind_target(f"dns://localhost:{dns_server}/ok.test"))
        assert dispatch.ensure(2) and dispatch.threads.size == 1
        assert done.wait(TIMEOUT * 2)
    finally:
        dispatch.stop()
    assert outcomes["by address"].ok and outcomes["by name"].ok, outcomes
