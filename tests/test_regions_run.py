"""Regions for real (issue 21): four `sitewatch run` against one PostgreSQL, regions a (two
hosts, racing), b and c, checking from 127.0.0.2, .3 and .4 (check.source_address) a target
that refuses chosen source addresses (tests/regionharness.py), with their notices delivered to
a real webhook receiver on two channels.

One test walks through the outages in order, on the same hosts, so that the module starts four
runs once (a module fixture would be started again on every pytest-xdist worker the tests were
spread over):

1. refused from region a: the majority URL is partial (no incident, no notice), the `any` URL
   down, the `all` URL partial;
2. refused from a and b: the majority URL down, one incident, one notice per channel naming
   both regions; `any` still in its one incident; `all` still partial;
3. every region answers: all up, one up notice per incident and channel;
4. region c's only host stopped: c absent, one region_absent notice per channel, nothing down;
   refused from a and b with c absent: the `all` URL is down (c counts for nothing);
5. the runs stopped: every (slot, region) checked exactly once, each by a host of its region,
   both hosts of region a having taken part.

Periods are 2 s and thresholds 1 (one failed slot turns a region down). A region is absent
after two periods without a heartbeat: the hosts beat every half check.min_period (1 s here,
alerts/notifier.py region_interval). Beating every 5 s regardless, a region whose hosts were
running was absent (4 s without a beat) for part of every 5 s, and left out of the count: with
region a refused, the majority URL read up, not partial.
"""

import json
import re

import psycopg2
import pytest

from tests.alert_receivers import WebhookReceiver
from tests.conftest import _fresh_database
from tests.regionharness import SitewatchRun, SourceFilteringServer, import_urls, wait_until

PERIOD = 2
WAIT = 12 * PERIOD           # a state change: a slot or two, on a loaded machine
SOURCE = {"a": "127.0.0.2", "b": "127.0.0.3", "c": "127.0.0.4"}
HOSTS = (("a1", "a"), ("a2", "a"), ("b1", "b"), ("c1", "c"))
CHANNELS = ("hook", "chat")
KEY = re.compile(r"\[sitewatch (\w+) (\S+)\]")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def region_dsn(pg_base_dsn, template_db):
    yield from _fresh_database(pg_base_dsn, "sitewatch_rr", template_db)


@pytest.fixture(scope="module")
def site():
    with SourceFilteringServer() as server:
        yield server


@pytest.fixture(scope="module")
def hook():
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def hosts(region_dsn, site, hook, tmp_path_factory):
    """The URLs (down_when majority, any, all) and the four runs, started together."""
    tmp = tmp_path_factory.mktemp("regions")
    import_urls(tmp, region_dsn, [
        {"url": site.url(f"/{down_when}"), "period": PERIOD, "regions": ["a", "b", "c"], "down_when": down_when}
        for down_when in ("majority", "any", "all")])
    env = {"SITEWATCH_ALERTS__CHANNELS": json.dumps({name: hook.apprise_url("json", name) for name in CHANNELS}),
           "SITEWATCH_ALERTS__FAILURE_THRESHOLD": 1, "SITEWATCH_ALERTS__SUCCESS_THRESHOLD": 1,
           # Delivery is at least once: a send that outlives its timeout is retried even if the
           # hook got it. 3 s was once too little on a loaded CI machine (an `up` came twice).
           "SITEWATCH_ALERTS__SEND_TIMEOUT": 15, "SITEWATCH_ALERTS__RETRY_BACKOFF": 0.5,
           "SITEWATCH_CHECK__DEFAULT_PERIOD": PERIOD}
    runs = {}
    try:
        for name, region in HOSTS:
            runs[name] = SitewatchRun(tmp, region_dsn, name=name, region=region, source_address=SOURCE[region],
                                      env=env)
        for run in runs.values():
            run.wait_started(timeout=60)
        yield runs
    finally:
        for run in runs.values():
            run.stop()


def q(dsn, sql, params=None):
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()


def states(dsn) -> dict:
    """{down_when: state} of the three URLs."""
    return dict(q(dsn, "SELECT u.down_when, s.state FROM url u JOIN url_state s ON s.url_id = u.id"))


def region_states(dsn, down_when) -> dict:
    return dict(q(dsn, "SELECT rs.region, rs.state FROM url_region_state rs JOIN url u ON u.id = rs.url_id"
                       " WHERE u.down_when = %s", (down_when,)))


def incidents(dsn) -> list[tuple]:
    """(down_when, first_region, ended) of every incident, oldest first."""
    return q(dsn, "SELECT u.down_when, i.first_region, i.ended_at IS NOT NULL FROM incident i"
                  " JOIN url u ON u.id = i.url_id ORDER BY i.id")


def notices(hook) -> list[tuple]:
    """(channel, kind, key, text) of every notice delivered, in order."""
    out = []
    for message in hook.messages():
        body = message["body"]
        text = f"{body.get('title', '')}\n{body.get('message', '')}"
        found = KEY.search(text)
        out.append((message["path"].strip("/"), found.group(1) if found else None,
                    found.group(2) if found else None, text))
    return out


def settled(dsn, expected: dict, what: str) -> None:
    """Until the URLs' states are `expected`, then two more periods in which they stay so."""
    seen = []
    try:
        wait_until(lambda: seen.append(states(dsn)) or seen[-1] == expected, WAIT, f"{what}: {expected}")
    except TimeoutError as e:
        raise AssertionError(f"{e}; the last states seen: {seen[-1]}") from None
    last = q(dsn, "SELECT max(scheduled_at) FROM task_result")[0][0]
    wait_until(lambda: q(dsn, "SELECT count(DISTINCT scheduled_at) FROM task_result WHERE scheduled_at > %s",
                         (last,))[0][0] >= 2, WAIT, "two more slots")
    assert states(dsn) == expected, what


def test_regions_partial_down_absent_and_exactly_once(hosts, site, hook, region_dsn):
    dsn = region_dsn
    settled(dsn, {"majority": "up", "any": "up", "all": "up"}, "every region answers")
    assert incidents(dsn) == [] and notices(hook) == []

    # 1. refused from region a only
    site.refuse = {SOURCE["a"]}
    settled(dsn, {"majority": "partial", "any": "down", "all": "partial"}, "refused from a")
    assert region_states(dsn, "majority") == {"a": "down", "b": "up", "c": "up"}
    assert incidents(dsn) == [("any", "a", False)]     # the majority and all URLs: none
    wait_until(lambda: len(notices(hook)) >= 2, WAIT, "the any URL's down notices")
    down_any = notices(hook)
    assert sorted((channel, kind) for channel, kind, _, _ in down_any) == [("chat", "down"), ("hook", "down")]
    assert all("/any" in text and "down from a;" in text for *_, text in down_any), down_any

    # 2. refused from a and b
    site.refuse = {SOURCE["a"], SOURCE["b"]}
    settled(dsn, {"majority": "down", "any": "down", "all": "partial"}, "refused from a and b")
    assert incidents(dsn) == [("any", "a", False), ("majority", incidents(dsn)[1][1], False)]
    assert incidents(dsn)[1][1] in ("a", "b")
    wait_until(lambda: len(notices(hook)) >= 4, WAIT, "the majority URL's down notices")
    down_majority = notices(hook)[2:]
    assert sorted((channel, kind) for channel, kind, _, _ in down_majority) == [("chat", "down"), ("hook", "down")]
    assert all("/majority" in text and "down from a, b;" in text for *_, text in down_majority), down_majority

    # 3. every region answers again
    site.refuse = set()
    settled(dsn, {"majority": "up", "any": "up", "all": "up"}, "every region answers again")
    assert incidents(dsn) == [("any", "a", True), ("majority", incidents(dsn)[1][1], True)]
    wait_until(lambda: len(notices(hook)) >= 8, WAIT, "the up notices")
    ups = notices(hook)[4:]
    assert sorted((channel, kind) for channel, kind, _, _ in ups) == [("chat", "up")] * 2 + [("hook", "up")] * 2
    assert len({key for _, _, key, _ in notices(hook)}) == 4      # one key per incident and kind

    # 4. region c's only host stopped: c is absent, once, and nothing goes down
    hosts["c1"].stop()
    wait_until(lambda: len(notices(hook)) >= 10, 2 * WAIT, "the region_absent notices")
    absent = notices(hook)[8:]
    assert sorted((channel, kind) for channel, kind, _, _ in absent) == [
        ("chat", "region_absent"), ("hook", "region_absent")]
    assert all("REGION ABSENT: c" in text for *_, text in absent), absent
    settled(dsn, {"majority": "up", "any": "up", "all": "up"}, "region c absent")
    assert len(notices(hook)) == 10 and len(incidents(dsn)) == 2
    # refused from a and b with c absent: all of the present regions are down
    site.refuse = {SOURCE["a"], SOURCE["b"]}
    settled(dsn, {"majority": "down", "any": "down", "all": "down"}, "refused from a and b, c absent")
    site.refuse = set()
    settled(dsn, {"majority": "up", "any": "up", "all": "up"}, "a and b answer, c absent")
    assert [kind for _, kind, _, _ in notices(hook)].count("region_absent") == 2   # still the one absence

    # 5. exactly once per (slot, region), each by a host of its region
    for run in hosts.values():
        assert run.stop() in (0, None), run.text()[-2000:]
    consumers = {name: {str(line["pid"]) for line in run.events("consumer started")} for name, run in hosts.items()}
    rows = q(dsn, "SELECT u.down_when, r.region, r.scheduled_at, r.ok, r.error_kind, r.checked_by FROM task_result r"
                  " JOIN url u ON u.id = r.url_id")
    assert rows and not [r for r in rows if r[4] == "lost"], rows
    by_host = {}
    for _, region, _, _, _, checked_by in rows:
        host = next(name for name, pids in consumers.items() if checked_by.rsplit(":", 1)[1] in pids)
        assert dict(HOSTS)[host] == region, (host, region)
        by_host[host] = by_host.get(host, 0) + 1
    assert by_host.get("a1") and by_host.get("a2"), by_host        # both of a's hosts took part
    answered, _ = site.counts()
    assert set(answered) <= {SOURCE["a"], SOURCE["b"], SOURCE["c"]}
    for down_when in ("majority", "any", "all"):
        for region in ("a", "b", "c"):
            ok = sum(1 for r in rows if r[0] == down_when and r[1] == region and r[3])
            # every answered request was one result: no slot checked twice in one region
            assert site.paths[(SOURCE[region], f"/{down_when}")] == ok, (down_when, region)
