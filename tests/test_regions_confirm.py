"""Confirmation checks (sitewatch/regions/confirm.py, schema 16) on a real PostgreSQL: a first
failure in one region asks every present region without a task outstanding to check at once;
each confirmation counts toward its region's threshold, so a real outage is down before the
next slot; at most one confirmation per URL and region per period; exactly one result per
confirmation with two hosts of a region racing. Results are written by store.complete_tasks
exactly as a consumer writes them; slots are chosen by the test, so no test sleeps.
"""

import datetime
import threading

from sitewatch.db import store
from sitewatch.regions import confirm

from .test_regions import DEFAULTS, add, claim, connect, q, result

PERIOD = 60
THRESHOLDS = dict(DEFAULTS, failure_threshold=2, success_threshold=1)


class Url:
    """One URL in regions a, b and c, period 60 s, its slots on a grid ending about now (slot k
    at BASE + 60k), each region's result written by its own host."""

    def __init__(self, db):
        self.db = db
        self.id = add(db, "http://c.example/", regions="a,b,c", period=PERIOD)
        now = q(db, "SELECT date_trunc('second', now())")[0][0]
        self.base = now - datetime.timedelta(seconds=70)        # slot 1 a few seconds ago
        # the cursor on the grid (a slot far ahead): confirm.confirmations tells the slots by it
        q(db, "UPDATE url SET next_check_at = %s WHERE id = %s", (self.base + datetime.timedelta(hours=1), self.id))

    def slot(self, k):
        """Enqueue slot k in every region (as the producer does)."""
        q(self.db, "INSERT INTO task (url_id, scheduled_at, available_at, region)"
                   " SELECT %s, %s, now(), unnest('{a,b,c}'::text[])",
          (self.id, self.base + datetime.timedelta(seconds=PERIOD * k)))

    def check(self, region, ok):
        """Region `region`'s host checks its one outstanding task of the URL."""
        owner = f"host-{region}:c:1"
        [task] = claim(self.db, region, owner)
        assert store.complete_tasks(self.db, [result(task, owner, ok)], THRESHOLDS) == []
        return task

    def tasks(self):
        return q(self.db, "SELECT region, scheduled_at, available_at <= now() FROM task WHERE url_id = %s"
                          " ORDER BY region", (self.id,))

    def state(self):
        return q(self.db, "SELECT state FROM url_state WHERE url_id = %s", (self.id,))[0][0]

    def notices(self):
        return q(self.db, "SELECT kind, detail FROM alert_outbox WHERE url_id = %s ORDER BY id", (self.id,))

    def confirmations(self):
        return [(region, ok) for region, _, ok, _ in confirm.confirmations(self.db, self.id, self.base)]


def test_a_first_failure_asks_each_region_without_a_task_to_check_now_and_the_url_is_down_before_its_next_slot(db):
    u = Url(db)
    u.slot(0)
    for region in "abc":
        u.check(region, True)
    assert u.state() == "up" and u.tasks() == []
    u.slot(1)
    u.check("a", False)                       # a's first failure: b and c have slot 1 outstanding
    [(region, at, claimable)] = u.tasks()[:1]
    assert region == "a" and claimable
    assert at > u.base + datetime.timedelta(seconds=PERIOD)       # not slot 1's key: a time of its own
    assert [t[0] for t in u.tasks()] == ["a", "b", "c"]
    u.check("b", False)                       # b's first failure: b is asked (a already was)
    assert [t[0] for t in u.tasks()] == ["a", "b", "c"]
    u.check("c", True)                        # c is up: nothing asked
    assert [t[0] for t in u.tasks()] == ["a", "b"]
    assert u.state() == "up" and u.notices() == []           # failing, no region down yet
    u.check("a", False)                       # the confirmations count toward the threshold (2)
    assert u.state() == "partial"
    u.check("b", False)
    assert u.state() == "down"                # before slot 2: one period after the outage, not two
    [(kind, detail)] = u.notices()
    assert kind == "down" and detail["down_regions"] == ["a", "b"] and detail["first_region"] == "a"
    assert q(db, "SELECT started_at FROM incident WHERE url_id = %s", (u.id,)) == [
        (u.base + datetime.timedelta(seconds=PERIOD),)]                # the first failed slot
    assert sorted(u.confirmations()) == [("a", False), ("b", False)]
    assert u.tasks() == []
    # slot 2: a and b still failing are down already (no first failure): nothing asked
    u.slot(2)
    for region, ok in (("a", False), ("b", False), ("c", True)):
        u.check(region, ok)
    assert u.tasks() == [] and len(u.confirmations()) == 2
    assert q(db, "SELECT count(*), count(DISTINCT (scheduled_at, region)) FROM task_result WHERE url_id = %s",
             (u.id,)) == [(11, 11)]


def test_at_most_one_confirmation_per_url_and_region_per_period(db):
    u = Url(db)
    u.slot(0)
    for region in "abc":
        u.check(region, True)
    u.slot(1)
    u.check("a", False)                       # asks a (b and c have slot 1 outstanding)
    u.check("a", True)                        # a blip: a's re-check passes, its streak ends
    u.check("c", True)
    u.check("b", False)                       # asks b and c (c's slot is done), not a again
    assert [t[0] for t in u.tasks()] == ["b", "c"]
    u.check("b", True)
    u.check("c", False)                       # c's confirmation fails: a confirmation asks no one
    assert u.tasks() == []
    assert sorted(u.confirmations()) == [("a", True), ("b", True), ("c", False)]
    assert u.state() == "up"
    # slot 2, a period on: a's new first failure may ask again (c's streak goes on: not a first)
    u.slot(2)
    u.check("a", False)
    assert [t[0] for t in u.tasks()] == ["a", "b", "c"]
    assert u.tasks()[0][1] != u.base + datetime.timedelta(seconds=2 * PERIOD)     # not slot 2's key


def test_no_confirmation_for_an_absent_region_nor_for_a_url_without_regions(db):
    from sitewatch.alerts import store as alerts_store
    alerts_store.region_heartbeat(db, "h-c:n:1", "c")
    q(db, "UPDATE region_host SET seen_at = now() - interval '1 hour'")
    alerts_store.announce_absent_regions(db, 120, ["ops"])   # absent: announced (migration 0017)
    u = Url(db)
    u.slot(0)
    for region in "ab":
        u.check(region, True)
    q(db, "DELETE FROM task WHERE url_id = %s", (u.id,))
    u.slot(1)
    q(db, "DELETE FROM task WHERE url_id = %s AND region = 'c'", (u.id,))
    u.check("b", True)
    u.check("a", False)
    assert [t[0] for t in u.tasks()] == ["a", "b"]           # c is absent: not asked
    plain = add(db, "http://p.example/")
    q(db, "INSERT INTO task (url_id, scheduled_at, available_at) VALUES (%s, now(), now())", (plain,))
    [task] = claim(db, "")
    store.complete_tasks(db, [result(task, "host-none:c:1", False)], THRESHOLDS)
    assert q(db, "SELECT count(*) FROM task WHERE url_id = %s", (plain,)) == [(0,)]


def test_confirmations_are_checked_exactly_once_with_two_hosts_per_region_racing(dsn, db):
    """Hosts a1, a2 (region a) and b1, b2 (region b) claim and complete as fast as they can over
    12 slots of 20 URLs; b fails every other slot, so each of its streaks asks for confirmations
    in both regions. Every (URL, scheduled_at, region) is recorded once, regular or confirmation,
    each by a host of its region. The slots are in the future: the confirmations (now) come
    before them, so their results leave the states alone and every odd slot is a first failure."""
    base = q(db, "SELECT date_trunc('second', now()) + interval '1 day'")[0][0]
    q(db, """INSERT INTO url (url, period, timeout, next_check_at, regions)
             SELECT 'http://h' || i || '.example/', 60, 5, %s + interval '1 day', '{a,b}'
             FROM generate_series(1, 20) i""", (base,))
    rounds, stop, errors = 12, threading.Event(), []
    failing = threading.Event()

    def host(owner, region):
        conn = connect(dsn)
        try:
            while not stop.is_set():
                tasks = claim(conn, region, owner, limit=7)
                ok = not (region == "b" and failing.is_set())
                assert store.complete_tasks(conn, [result(t, owner, ok) for t in tasks], THRESHOLDS) == []
        except Exception as e:   # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            conn.close()

    def drained():
        for _ in range(3000):
            if q(db, "SELECT count(*) FROM task")[0][0] == 0:
                return
            threading.Event().wait(0.01)
        raise AssertionError("tasks left")

    hosts = [threading.Thread(target=host, args=(f"{name}:c:1", name[0])) for name in ("a1", "a2", "b1", "b2")]
    for t in hosts:
        t.start()
    for k in range(rounds):
        drained()
        failing.set() if k % 2 else failing.clear()
        q(db, "INSERT INTO task (url_id, scheduled_at, available_at, region)"
              " SELECT id, %s, now(), unnest(regions) FROM url", (base + datetime.timedelta(seconds=60 * k),))
    drained()
    stop.set()
    for t in hosts:
        t.join()
    assert not errors, errors
    assert q(db, "SELECT count(*) - count(DISTINCT (url_id, scheduled_at, region)) FROM task_result") == [(0,)]
    regular = q(db, "SELECT count(*) FROM task_result WHERE scheduled_at >= %s", (base,))[0][0]
    assert regular == 20 * rounds * 2
    confirmed = q(db, "SELECT url_id, region, count(*) FROM task_result WHERE scheduled_at < %s"
                      " GROUP BY 1, 2", (base,))
    assert confirmed, "no confirmation was asked"
    assert all(n <= rounds // 2 for _, _, n in confirmed), confirmed     # one per streak at most
    by = dict(q(db, "SELECT region, array_agg(DISTINCT split_part(checked_by, ':', 1) ORDER BY"
                    " split_part(checked_by, ':', 1)) FROM task_result GROUP BY region"))
    assert set(by["a"]) <= {"a1", "a2"} and set(by["b"]) <= {"b1", "b2"}
