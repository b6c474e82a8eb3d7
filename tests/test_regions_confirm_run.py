"""Confirmation checks for real (issue 21): three `sitewatch run` in regions a, b and c
(checking from 127.0.0.2, .3 and .4) against one PostgreSQL and a target that refuses chosen
source addresses (tests/regionharness.py), notices delivered to a real webhook receiver.

One URL, period 20 s, failure_threshold 2, down when a majority (2 of 3) is. The outage (a and
b refused) begins just after a slot was checked in every region. Without confirmations, a and
b would each be down at their second failed slot, so the down would wait for the second slot
after the outage, about two periods. With them, the first failed slot asks every region to
check at once: a's and b's confirmations fail too, the threshold is met, and the down notice
goes out a few seconds after that first failed slot, before the next slot is checked anywhere.
Each region gets at most one confirmation in that period.

A module of its own: its runs have a long period and a threshold of 2, and starting them beside
test_regions_run's four (2 s periods) would load two cores with seven runs.
"""

import collections
import datetime
import json

import psycopg2
import pytest

from sitewatch.regions import confirm
from tests.alert_receivers import WebhookReceiver
from tests.conftest import _fresh_database
from tests.regionharness import SitewatchRun, SourceFilteringServer, import_urls, wait_until

PERIOD = 20
SOURCE = {"a": "127.0.0.2", "b": "127.0.0.3", "c": "127.0.0.4"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def confirm_dsn(pg_base_dsn, template_db):
    yield from _fresh_database(pg_base_dsn, "sitewatch_rc", template_db)


def q(dsn, sql, params=None):
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()


def test_confirmation_checks_the_down_notice_arrives_within_about_one_period_of_the_outage(
        confirm_dsn, tmp_path):
    dsn = confirm_dsn
    with SourceFilteringServer() as site, WebhookReceiver() as hook:
        import_urls(tmp_path, dsn, [{"url": site.url("/shop"), "period": PERIOD, "regions": ["a", "b", "c"]}])
        env = {"SITEWATCH_ALERTS__CHANNELS": json.dumps({"hook": hook.apprise_url("json", "hook")}),
               "SITEWATCH_ALERTS__FAILURE_THRESHOLD": 2, "SITEWATCH_ALERTS__SUCCESS_THRESHOLD": 1,
               "SITEWATCH_ALERTS__SEND_TIMEOUT": 3, "SITEWATCH_ALERTS__RETRY_BACKOFF": 0.5,
               "SITEWATCH_CHECK__DEFAULT_PERIOD": PERIOD}
        runs = []
        try:
            for region in "abc":
                runs.append(SitewatchRun(tmp_path, dsn, name=f"{region}1", region=region,
                                         source_address=SOURCE[region], env=env))
            for run in runs:
                run.wait_started(timeout=60)
            [(url_id,)] = q(dsn, "SELECT id FROM url")

            # a slot checked in every region, all up
            def slot_checked_everywhere():
                rows = q(dsn, "SELECT scheduled_at, count(*), bool_and(ok) FROM task_result"
                              " GROUP BY 1 ORDER BY 1 DESC LIMIT 1")
                return rows and rows[0][1] == 3 and rows[0][2] and rows[0][0]
            checked = wait_until(slot_checked_everywhere, 3 * PERIOD, "a slot checked in a, b and c")
            assert q(dsn, "SELECT state FROM url_state") == [("up",)]

            # the outage: refused from a and b from now on
            site.refuse = {SOURCE["a"], SOURCE["b"]}
            first_failed = checked + datetime.timedelta(seconds=PERIOD)
            second = first_failed + datetime.timedelta(seconds=PERIOD)
            wait_until(lambda: hook.messages(), 3 * PERIOD, "the down notice")
            [(kind, down_at, detail)] = q(dsn, "SELECT kind, created_at, detail FROM alert_outbox")
            assert kind == "down" and detail["down_regions"] == ["a", "b"], detail
            # decided before the second slot after the outage was checked in any region (without
            # confirmations it is that slot's failures that would make a and b down)
            started = q(dsn, "SELECT min(started_at) FROM task_result WHERE scheduled_at = %s", (second,))[0][0]
            assert started is None or down_at < started, (down_at, started)
            assert down_at < second
            assert q(dsn, "SELECT started_at FROM incident") == [(first_failed,)]    # the first failed slot
            [message] = hook.messages()
            assert "/shop" in json.dumps(message["body"]) and "down from a, b" in json.dumps(message["body"])

            # at most one confirmation per region in that period; a's and b's failed
            conn = psycopg2.connect(dsn)
            try:
                asked = [row for row in confirm.confirmations(conn, url_id, first_failed) if row[1] < second]
            finally:
                conn.close()
            per_region = collections.Counter(region for region, *_ in asked)
            assert per_region["a"] == 1 and per_region["b"] == 1 and per_region["c"] <= 1, asked
            assert all(not ok for region, _, ok, _ in asked if region in "ab"), asked
            for run in runs:
                assert run.stop() in (0, None), run.text()[-2000:]
        finally:
            for run in runs:
                run.stop()
