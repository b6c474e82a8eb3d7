"""A check that timed out while its consumer was starved of CPU is the host's fault, not the
site's: recorded `lost`, never `timeout` (sitewatch/run/starvation.py, issue 18)."""

import threading
import time

import structlog

from sitewatch.check import probe
from sitewatch.run.starvation import Starvation
from tests.test_run import import_urls, query, scalar, server, sitewatch, wait_until  # noqa: F401


def _timeout() -> probe.Outcome:
    return probe.Outcome(started_at=None, response_time_ms=None, status_code=None, regex_matched=None,
                         ok=False, error_kind="timeout", error="timed out after 10.0 s while connecting",
                         cert_days_left=None)


def test_only_a_timeout_starved_half_its_time_is_the_hosts():
    starvation = Starvation(structlog.get_logger("test"))
    starvation.late(100.0, 100.1)          # 0.1 s late: not a spell
    starvation.late(103.0, 106.0)          # 3 s
    starvation.late(108.0, 110.0)          # 2 s
    assert starvation.during(100.0, 110.0, 110.0) == 5.0
    assert starvation.during(104.0, 109.0, 110.0) == 3.0
    assert starvation.during(110.0, 120.0, 120.0) == 0.0
    assert starvation.during(107.0, 110.0, 110.0) == 2.0     # from between two spells
    starvation.due = 115.0                 # the canary, due at 115, has not run by 120: starved now
    assert starvation.during(110.0, 120.0, 120.0) == 5.0
    dead = threading.Thread(target=lambda: None)
    dead.start()
    dead.join()
    starvation.canary = dead               # a dead canary is overdue for ever: no evidence
    assert starvation.during(110.0, 120.0, 120.0) == 0.0
    starvation.canary = starvation.due = None

    assert starvation.judge(_timeout(), 90.0, 100.0, 100.0).error_kind == "timeout"     # no spell in it
    assert starvation.judge(_timeout(), 100.0, 111.0, 111.0).error_kind == "timeout"    # 5 of 11 s
    lost = starvation.judge(_timeout(), 102.0, 110.0, 110.0)                            # 5 of 8 s
    assert (lost.ok, lost.error_kind, lost.status_code, lost.response_time_ms) == (False, "lost", None, None)
    assert starvation.judge(_timeout(), 102.0, 112.0, 112.0).error_kind == "lost"       # exactly half
    assert "starved of CPU (5.0 s of its 8.0 s)" in lost.error and "while connecting" in lost.error
    refused = probe.Outcome(started_at=None, response_time_ms=None, status_code=None, regex_matched=None,
                            ok=False, error_kind="connect", error="refused", cert_days_left=None)
    assert starvation.judge(refused, 102.0, 110.0, 110.0) is refused                    # only timeouts
    assert starvation.take() == 2 and starvation.take() == 0


def test_a_consumer_frozen_during_a_check_records_it_lost_then_down_again(sitewatch, cli, db, server):  # noqa: F811
    """A URL that never answers (timeout 2 s) is recorded `timeout`; the one check during which
    its consumer was frozen (SIGSTOP, 5 s: the starvation of a host at twice its capacity, made
    certain) is recorded `lost`, saying why; the next checks are `timeout` again."""
    # Leases and heartbeats outlast the freeze: the frozen check's own result is the one written.
    run = sitewatch(env={"SITEWATCH_CONSUMER__PROCESSES": 1, "SITEWATCH_SUPERVISOR__HEARTBEAT_TIMEOUT": 30,
                         "SITEWATCH_CONSUMER__LEASE_MARGIN": 30})
    run.wait_started()
    import_urls(cli, [{"url": server.url("/hang"), "period": 3, "timeout": 2}])
    wait_until(lambda: scalar(db, "SELECT count(*) FROM task_result WHERE error_kind = 'timeout'") >= 1, 20,
               "a first timeout, recorded as the site's")
    consumer = run.child("sitewatch: consumer 1")
    # Freeze the consumer just after it claims a check (its task leased): between checks first.
    leased = "SELECT count(*) FROM task WHERE lease_owner IS NOT NULL"
    wait_until(lambda: scalar(db, leased) == 0, 10, "no check running", interval=0.02)
    wait_until(lambda: scalar(db, leased) == 1, 10, "the next check claimed", interval=0.02)
    frozen_slot = scalar(db, "SELECT scheduled_at FROM task WHERE lease_owner IS NOT NULL")
    time.sleep(0.3)                       # its thread has started the check (2 s timeout)
    consumer.suspend()
    time.sleep(5)
    consumer.resume()
    frozen = "SELECT error_kind, error FROM task_result WHERE scheduled_at = %s"
    found = wait_until(lambda: query(db, frozen, (frozen_slot,)), 15, "the frozen check recorded")
    assert found[0][0] == "lost" and "starved of CPU" in found[0][1] and "timed out" in found[0][1], found
    run.wait_for("a check timed out while this consumer was starved of CPU: recorded lost, not down "
                 "(the host is overloaded: add a host or CPU)")
    wait_until(lambda: scalar(db, "SELECT count(*) FROM task_result WHERE error_kind = 'timeout' "
                                  "AND scheduled_at > %s", (frozen_slot,)) >= 1, 20,
               "the site's timeouts recorded again once the consumer keeps time")
    assert scalar(db, "SELECT count(*) FROM task_result WHERE error_kind NOT IN ('timeout', 'lost')") == 0
