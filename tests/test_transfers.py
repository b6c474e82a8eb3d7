"""run/transfers.py: every hostile case at once on one CurlMulti loop, judged as the engines judge it."""

import threading
import time

import pytest

from sitewatch.check import choice as engines
from sitewatch.check.probe import Target
from tests.test_engines_hostile import CASES, TIMEOUT
from tests.test_probe import tls_server  # noqa: F401  (fixture)

pytestmark = [pytest.mark.serverless,
              pytest.mark.skipif(not engines.curl_available(), reason="pycurl is not installed")]


def _loop_threads() -> set:
    return {thread for thread in threading.enumerate() if thread.name == "curl-transfers"}


def run_all(targets: list[Target], timeout: float = 30) -> list:
    from sitewatch.run.transfers import CurlTransfers

    outcomes: dict[int, object] = {}
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

    transfers = CurlTransfers(on_start, on_done)
    try:
        assert transfers.ensure(len(targets))
        assert transfers.size == 1 and len(_loop_threads() - loops_before) == 1  # one thread for all
        for index, target in enumerate(targets):
            transfers.submit(index, target)
        assert all_done.wait(timeout), f"{len(outcomes)} of {len(targets)} done"
    finally:
        transfers.stop()
    return [outcomes[index] for index in range(len(targets))]


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
