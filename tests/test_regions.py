"""Regions (DESIGN.md section 12) on a real PostgreSQL: one task per (slot, region) from the
producer's one statement, claims by region, exactly one result per (slot, region) with hosts
racing, and each (URL, region)'s state with the URL's overall state by down_when, moved by
store.complete_tasks exactly as a consumer writes results.

Slots are chosen by the test (tasks inserted for a slot, claimed by a region's host, completed),
so no test sleeps.
"""

import datetime
import threading

import psycopg2
import pytest

from sitewatch import config
from sitewatch.alerts import messages
from sitewatch.db import store
from sitewatch.urlspec import make_entry

CHECK = config.load({}).check
MARGIN, MAX_ATTEMPTS = 10.0, 3
T0 = datetime.datetime.now(datetime.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) \
    - datetime.timedelta(days=1)
DEFAULTS = {"failure_threshold": 3, "success_threshold": 2, "channels": ["ops"], "notify_degraded": True}


def connect(dsn):
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    return conn


def q(conn, sql, params=None):
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else None


def add(conn, url, **options):
    store.add_url(conn, make_entry({"url": url, **options}, CHECK))
    return q(conn, "SELECT id FROM url WHERE url = %s", (url,))[0][0]


def claim(conn, region, owner=None, limit=100):
    return store.claim_tasks(conn, owner or f"host-{region or 'none'}:c:1", limit, MARGIN, MAX_ATTEMPTS, region)[0]


def result(task, owner, ok):
    return (task["id"], task["attempts"], owner, datetime.datetime.now(datetime.timezone.utc),
            10.0 if ok else None, 200 if ok else None, None, ok, None if ok else "connect",
            None if ok else f"connection refused ({owner.split(':')[0]})", None)


# --------------------------------------------------------------------------- the queue


def test_the_producer_enqueues_one_task_per_region_in_one_statement(db):
    regional = add(db, "http://r.example/", regions="a,b,c")
    plain = add(db, "http://p.example/")
    due, enqueued, skipped = store.enqueue_due(db, 100)
    assert (due, enqueued, skipped) == (2, 4, 0)           # URLs due, tasks enqueued
    assert sorted(q(db, "SELECT url_id, region FROM task")) == [
        (regional, "a"), (regional, "b"), (regional, "c"), (plain, "")]
    slots = q(db, "SELECT DISTINCT scheduled_at FROM task WHERE url_id = %s", (regional,))
    assert len(slots) == 1                                   # the same slot in every region
    # the next due slot with every region's task still outstanding: skipped and counted
    q(db, "UPDATE url SET next_check_at = now() - interval '1 second'")
    assert store.enqueue_due(db, 100) == (2, 0, 2)


def test_a_host_claims_its_own_region_and_the_tasks_without_one_never_another_region(db):
    regional = add(db, "http://r.example/", regions="a,b")
    plain = add(db, "http://p.example/")
    store.enqueue_due(db, 100)
    taken_b = claim(db, "b")
    assert sorted(t["url_id"] for t in taken_b) == sorted([plain, regional])
    assert q(db, "SELECT region FROM task WHERE lease_owner = 'host-b:c:1' ORDER BY region") == [("",), ("b",)]
    assert claim(db, "b") == []                              # a's task is not b's
    assert claim(db, "") == []                               # nor a host's without a region
    assert [t["url_id"] for t in claim(db, "a")] == [regional]


def test_a_host_without_a_region_claims_only_tasks_without_one(db):
    add(db, "http://r.example/", regions="a")
    plain = add(db, "http://p.example/")
    store.enqueue_due(db, 100)
    assert [t["url_id"] for t in claim(db, "")] == [plain]
    assert claim(db, "") == []
    assert q(db, "SELECT region, lease_owner FROM task ORDER BY region") == [("", "host-none:c:1"), ("a", None)]


def test_hosts_racing_record_exactly_one_result_per_slot_and_region(dsn, db):
    """Two hosts of region a and one of region b, each claiming and completing as fast as it can,
    over 30 slots of 40 URLs: every (slot, region) once, each by a host of its region."""
    q(db, """INSERT INTO url (url, period, timeout, next_check_at, regions)
             SELECT 'http://h' || i || '.example/', 60, 5, now(), '{a,b}' FROM generate_series(1, 40) i""")
    rounds, stop, errors = 30, threading.Event(), []

    def host(owner, region):
        conn = connect(dsn)
        try:
            while not stop.is_set():
                tasks = claim(conn, region, owner, limit=7)
                refused = store.complete_tasks(conn, [result(t, owner, True) for t in tasks], DEFAULTS)
                assert refused == []
        except Exception as e:   # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            conn.close()

    hosts = [threading.Thread(target=host, args=(f"{name}:c:1", region))
             for name, region in (("a1", "a"), ("a2", "a"), ("b1", "b"))]
    for t in hosts:
        t.start()
    for k in range(rounds):
        # slot k of every URL: wait until the previous slot's tasks are done, then enqueue
        for _ in range(2000):
            if q(db, "SELECT count(*) FROM task")[0][0] == 0:
                break
            threading.Event().wait(0.01)
        q(db, "UPDATE url SET next_check_at = now() - make_interval(secs => %s)", (60 * (rounds - k),))
        store.enqueue_due(db, 1000)
    for _ in range(2000):
        if q(db, "SELECT count(*) FROM task")[0][0] == 0:
            break
        threading.Event().wait(0.01)
    stop.set()
    for t in hosts:
        t.join()
    assert not errors, errors
    assert q(db, "SELECT count(*), count(DISTINCT (url_id, scheduled_at, region)) FROM task_result") \
        == [(40 * rounds * 2, 40 * rounds * 2)]
    by = dict(q(db, "SELECT region, array_agg(DISTINCT split_part(checked_by, ':', 1) ORDER BY"
                    " split_part(checked_by, ':', 1)) FROM task_result GROUP BY region"))
    assert by["b"] == ["b1"]
    assert set(by["a"]) <= {"a1", "a2"}


# --------------------------------------------------------------------------- state and quorum


class Regions:
    """One URL checked in regions a, b and c; each round is one slot checked in every region,
    each region's result written by its own host through complete_tasks."""

    def __init__(self, db, down_when=None, url="http://q.example/"):
        self.db = db
        options = {"regions": "a,b,c"}
        if down_when:
            options["down_when"] = down_when
        self.url_id = add(db, url, **options)
        self.slot = 0
        self.defaults = dict(DEFAULTS)

    def round(self, failing=(), times=1):
        for _ in range(times):
            scheduled = T0 + datetime.timedelta(minutes=self.slot)
            self.slot += 1
            # the confirmation checks a first failure asked for (schema 16) are left unchecked:
            # these tests are about the quorum, slot by slot (test_regions_confirm.py: confirmations)
            q(self.db, "DELETE FROM task WHERE url_id = %s", (self.url_id,))
            q(self.db, "INSERT INTO task (url_id, scheduled_at, available_at, region)"
                       " SELECT %s, %s, now(), unnest('{a,b,c}'::text[])", (self.url_id, scheduled))
            for region in ("a", "b", "c"):
                owner = f"host-{region}:c:1"
                tasks = claim(self.db, region, owner)
                assert len(tasks) == 1
                assert store.complete_tasks(self.db, [result(tasks[0], owner, region not in failing)],
                                            self.defaults) == []
        return self

    @property
    def state(self):
        return q(self.db, "SELECT state FROM url_state WHERE url_id = %s", (self.url_id,))[0][0]

    @property
    def region_states(self):
        return dict(q(self.db, "SELECT region, state FROM url_region_state WHERE url_id = %s", (self.url_id,)))

    def notices(self):
        return q(self.db, "SELECT kind, channel, detail FROM alert_outbox WHERE url_id = %s ORDER BY id",
                 (self.url_id,))

    def incidents(self):
        return q(self.db, "SELECT started_at, ended_at, first_region, first_error_kind, regions FROM incident"
                          " WHERE url_id = %s ORDER BY id", (self.url_id,))


def test_majority_one_region_down_is_partial_two_are_down_with_one_notice_naming_them(db):
    u = Regions(db).round(times=2)
    assert u.state == "up" and u.region_states == {"a": "up", "b": "up", "c": "up"}
    u.round(failing="a", times=3)
    assert u.region_states["a"] == "down"
    assert u.state == "partial"
    assert u.notices() == [] and u.incidents() == []        # partial: no incident, no notice
    u.round(failing="ab", times=2)
    assert u.state == "partial"                              # b has failed twice: not down yet
    u.round(failing="ab")
    assert u.region_states == {"a": "down", "b": "down", "c": "up"}
    assert u.state == "down"
    [(kind, channel, detail)] = u.notices()
    assert (kind, channel) == ("down", "ops")
    assert detail["down_regions"] == ["a", "b"] and detail["up_regions"] == ["c"]
    assert detail["first_region"] == "a"
    assert detail["regions"]["b"] == {"state": "down", "error_kind": "connect",
                                      "error": "connection refused (host-b)"}
    title, body, _ = messages.render(kind, detail, "k")
    assert "down (down from a, b; up from c; first a: connect: connection refused (host-a))" in body, body
    [(started, ended, first_region, first_error_kind, regions)] = u.incidents()
    assert ended is None and first_region == "a" and first_error_kind == "connect"
    assert started == T0 + datetime.timedelta(minutes=2)     # a's first failed slot
    assert regions["a"]["state"] == "down"
    # more failures: no second notice; b recovers: partial, the incident ends with one up notice
    u.round(failing="ab", times=2)
    assert len(u.notices()) == 1
    u.round(failing="a", times=2)
    assert u.state == "partial"
    assert [n[0] for n in u.notices()] == ["down", "up"]
    up = u.notices()[1][2]
    assert up["down_regions"] == ["a"] and up["up_regions"] == ["b", "c"]
    assert u.incidents()[0][1] is not None
    u.round(times=2)
    assert u.state == "up" and [n[0] for n in u.notices()] == ["down", "up"]


@pytest.mark.parametrize("down_when, down_at, partial_before", [
    ("any", "a", False), ("all", "abc", True), ("2", "ab", True), ("majority", "ab", True), ("3", "abc", True)])
def test_down_when_decides_how_many_regions_make_the_url_down(db, down_when, down_at, partial_before):
    u = Regions(db, down_when=down_when).round(times=2)
    if partial_before:
        u.round(failing=down_at[:-1], times=3)
        assert u.state == "partial" and u.notices() == []
    u.round(failing=down_at, times=3)
    assert u.state == "down"
    kinds = [n[0] for n in u.notices()]
    assert kinds == ["down"]
    assert u.notices()[0][2]["down_regions"] == list(down_at)


def test_the_configured_down_when_applies_to_urls_without_their_own(db):
    u = Regions(db)
    u.defaults["down_when"] = "any"
    u.round(times=2).round(failing="c", times=3)
    assert u.state == "down" and [n[0] for n in u.notices()] == ["down"]


def test_results_of_a_url_without_regions_move_only_its_own_state_as_before(db):
    plain = add(db, "http://p.example/")
    q(db, "INSERT INTO task (url_id, scheduled_at, available_at) VALUES (%s, %s, now())", (plain, T0))
    [task] = claim(db, "a")
    store.complete_tasks(db, [result(task, "host-a:c:1", True)], DEFAULTS)
    assert q(db, "SELECT state, last_slot FROM url_state WHERE url_id = %s", (plain,)) == [("unknown", T0)]
    assert q(db, "SELECT count(*) FROM url_region_state") == [(0,)]
    assert q(db, "SELECT region FROM task_result") == [("",)]


def test_another_regions_waiting_tasks_do_not_say_this_hosts_checks_are_behind(dsn, db):
    """The maintenance job paces itself on how long claimable tasks wait: on a host of region b
    (or without a region), only the tasks its consumers claim count."""
    from sitewatch.history import maintenance
    add(db, "http://r.example/", regions="a")
    store.enqueue_due(db, 100)
    q(db, "UPDATE task SET available_at = now() - interval '10 minutes'")
    for region, behind in (("b", False), ("", False), ("a", True)):
        probe = maintenance.ChecksBehind(dsn, 5.0, region)
        try:
            assert (probe() > 500) is behind, region
        finally:
            probe.close()


# --------------------------------------------------------------------------- absent regions


def test_an_absent_region_is_left_out_of_the_count_and_announced_once(dsn, db):
    """c's hosts stopped: with down_when all, a and b down make the URL down (c does not hold it
    partial), and one region_absent notice goes out however many notifiers sweep."""
    from sitewatch.alerts import store as alerts_store
    for owner, region, ago in (("h-a:n:1", "a", 0), ("h-b:n:1", "b", 0), ("h-c:n:1", "c", 600),
                               ("h-c:n:2", "c", 700)):
        alerts_store.region_heartbeat(db, owner, region)
        q(db, "UPDATE region_host SET seen_at = now() - make_interval(secs => %s) WHERE owner = %s", (ago, owner))
    sweeps = [connect(dsn) for _ in range(3)]
    for conn in sweeps * 2:
        alerts_store.announce_absent_regions(conn, 120, ["ops", "mail"])
    absent = q(db, "SELECT kind, channel, detail->>'region' FROM alert_outbox ORDER BY channel")
    assert absent == [("region_absent", "mail", "c"), ("region_absent", "ops", "c")]
    title, body, _ = messages.render("region_absent", {"region": "c", "since": None}, "k")
    assert title == "REGION ABSENT: c" and "not a site down" in body

    u = Regions(db, down_when="all", url="http://absent.example/").round(times=2)
    u.round(failing="ab", times=3)
    assert u.state == "down"
    [(kind, _, detail)] = u.notices()
    assert kind == "down" and detail["absent_regions"] == ["c"] and detail["regions"]["c"]["state"] == "absent"
    # c is back: counted again, so with all three needed the URL is only partial from now on
    alerts_store.region_heartbeat(db, "h-c:n:3", "c")
    alerts_store.announce_absent_regions(db, 120, ["ops"])
    assert q(db, "SELECT count(*) FROM region_absence") == [(0,)]
    u.round(failing="ab")
    assert u.state == "partial"
    for conn in sweeps:
        conn.close()


def test_a_region_never_seen_is_not_absent(db):
    u = Regions(db, down_when="all").round(times=2).round(failing="ab", times=3)
    assert u.state == "partial"


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("args, env, says", [
    (["url", "add", "http://x.example/", "--regions", "EU,us"], {}, "region must be"),
    (["url", "add", "http://x.example/", "--regions", "eu,eu"], {}, "twice"),
    (["url", "add", "http://x.example/", "--down-when", "most"], {}, "down when must be"),
    (["url", "add", "push://job", "--regions", "eu"], {}, "checked monitors"),
    (["url", "add", "http://x.example/"], {"SITEWATCH_REGION": "Eu West"}, "SITEWATCH_REGION"),
    (["url", "add", "http://x.example/"], {"SITEWATCH_ALERTS__DOWN_WHEN": "0"}, "alerts.down_when"),
    (["apply", "-"], {}, "entry 1 (line 1): down when must be"),
])
def test_bad_regions_or_down_when_exit_2_with_one_line_and_nothing_written(cli, db, args, env, says):
    result = cli(*args, env=env, input="- url: http://x.example/\n  regions: [eu]\n  down_when: none\n")
    assert result.returncode == 2, result
    assert len(result.stderr.strip().splitlines()) == 1 and says in result.stderr, result.stderr
    assert q(db, "SELECT count(*) FROM url") == [(0,)]


def test_regions_and_down_when_from_the_command_line_and_apply(cli, db):
    assert cli("url", "add", "http://x.example/", "--regions", "eu,us", "--down-when", "any").returncode == 0
    assert q(db, "SELECT regions, down_when FROM url") == [(["eu", "us"], "any")]
    assert cli("url", "update", "http://x.example/", "--regions", "", "--down-when", "").returncode == 0
    assert q(db, "SELECT regions, down_when FROM url") == [([], None)]
    result = cli("apply", "-", input="- url: http://x.example/\n  regions: [ap]\n  down-when: all\n")
    assert result.returncode == 0 and "~ http://x.example/: regions [] -> [\"ap\"]" in result.stdout, result
    assert q(db, "SELECT regions, down_when FROM url") == [(["ap"], "all")]


def test_certificate_notices_for_a_url_with_regions_once_per_threshold_and_certificate(db):
    """Schema 16: the certificate nearest expiry that any region saw gives alert_apply_results'
    notices (one per threshold crossed per certificate), whichever region saw it first."""
    u = Regions(db, url="https://cert.example/")

    def round_with(days: dict):
        scheduled = T0 + datetime.timedelta(minutes=u.slot)
        u.slot += 1
        q(db, "DELETE FROM task WHERE url_id = %s", (u.url_id,))
        q(db, "INSERT INTO task (url_id, scheduled_at, available_at, region)"
              " SELECT %s, %s, now(), unnest('{a,b,c}'::text[])", (u.url_id, scheduled))
        for region in "abc":
            owner = f"host-{region}:c:1"
            [task] = claim(db, region, owner)
            row = result(task, owner, True)[:-1] + (days[region],)
            assert store.complete_tasks(db, [row], u.defaults) == []

    round_with({"a": 40, "b": 40, "c": None})
    assert u.notices() == []
    round_with({"a": 40, "b": 12, "c": 40})          # b is served a certificate near expiry
    round_with({"a": 12, "b": 12, "c": 11})          # the same one, everywhere: no second notice
    [(kind, channel, detail)] = u.notices()
    assert (kind, channel) == ("cert_expiring", "ops") and detail["days_left"] == 12 and detail["threshold"] == 14
    round_with({"a": 6, "b": 6, "c": 6})             # the next threshold
    assert [n[2]["threshold"] for n in u.notices()] == [14, 7]
