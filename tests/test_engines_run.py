"""`sitewatch run` on each check engine: the consumer says which runs, and records phase timings."""

import json

import pytest

import tests.test_run
from tests.test_run import import_urls, query, wait_until

sitewatch, server = tests.test_run.sitewatch, tests.test_run.server


@pytest.mark.parametrize("engine", ["curl", "urllib3"])
def test_the_consumer_checks_on_the_configured_engine_and_records_phase_timings(sitewatch, cli, db, server,
                                                                                engine):
    run = sitewatch(env={"SITEWATCH_CHECK__ENGINE": engine, "SITEWATCH_CONSUMER__PROCESSES": 1})
    assert run.wait_for("consumer started")[-1]["engine"] == engine
    import_urls(cli, [{"url": server.url("/ok"), "period": 1}, {"url": server.url("/status/503"), "period": 1}])
    sql = ("SELECT status_code, dns_ms, connect_ms, tls_ms, first_byte_ms, response_time_ms FROM task_result"
           " ORDER BY status_code")
    wait_until(lambda: len(query(db, sql)) >= 2, 15, "a result of each URL")
    for status, dns, connect, tls, first_byte, total in query(db, sql)[:2]:
        assert status in (200, 503)
        assert dns is not None and connect is not None and first_byte is not None
        assert tls is None  # plain http
        assert dns + connect + first_byte <= total + 1  # phases of the one hop, within the total
    # ... and `sitewatch history` exports them.
    exported = json.loads(cli("history", server.url("/ok"), "--format", "json").stdout.splitlines()[0])
    assert exported["dns_ms"] is not None and exported["first_byte_ms"] is not None and exported["tls_ms"] is None
