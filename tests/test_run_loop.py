"""The run loop's own mechanics, in-process against the real database and real sockets:
the child's sleep, a consumer's claim/record cycle, the producer's pacing.

A consumer or producer here is the real class, given the real ChildContext a child
process builds; only the process around it is this test's (no supervisor, no fork).
Whole-program behaviour (signals, orphans, reloads) is in tests/test_run.py and
tests/test_faults.py, through the real `sitewatch run`.
"""

import os
import resource
import socket
import time
from types import SimpleNamespace

import pytest

from sitewatch import config
from sitewatch.run.child import ChildContext
from tests.test_run import query, wait_until


def make_ctx(dsn: str, role: str = "consumer-1", **settings) -> ChildContext:
    """The context a child process gets, with settings given as SITEWATCH_* environment."""
    env = {"MIN_PERIOD": "1", **{f"SITEWATCH_{k.upper()}": str(v) for k, v in settings.items()}}
    cfg = config.load(env)
    return ChildContext(role, cfg, dsn, SimpleNamespace(value=0.0), None, os.getppid())


@pytest.fixture
def high_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"hard RLIMIT_NOFILE {hard} < 2048")
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096) if hard != resource.RLIM_INFINITY else 4096, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# --- A1: descriptors of 1024 and more ---------------------------------------------------------


def test_child_sleep_wakes_on_a_socket_numbered_above_1023(dsn, high_fd_limit):
    # A consumer with a thousand check sockets open gets fd 1100 for its database connection
    # after a reconnect; select.select() raised "filedescriptor out of range" and the consumer died.
    ctx = make_ctx(dsn)
    a, b = socket.socketpair()
    high = os.dup2(a.fileno(), 1500)
    try:
        high_sock = socket.socket(fileno=high)
        assert ctx.sleep(0.05, [high_sock]) == []                # nothing to read: times out
        b.send(b"x")
        t0 = time.monotonic()
        assert ctx.sleep(5.0, [high_sock]) == [high_sock]       # readable: returned at once
        assert time.monotonic() - t0 < 1.0
        ctx.wake()
        assert ctx.sleep(5.0, []) == []                         # wake() still interrupts
        assert time.monotonic() - t0 < 2.0
    finally:
        high_sock.close()
        a.close()
        b.close()


# --- in-process consumer and producer ---------------------------------------------------------


def add_url(db, url: str, period: int = 60, timeout: float = 5.0, due_in: float = -1.0, **columns) -> int:
    """A URL row by SQL (any stored value, even one this version cannot read), due `due_in` s from now."""
    names = ", ".join(["url", "period", "timeout", "next_check_at", *columns])
    values = ", ".join(["%s", "%s", "%s", "now() + make_interval(secs => %s)", *["%s"] * len(columns)])
    return query(db, f"INSERT INTO url ({names}) VALUES ({values}) RETURNING id",
                 (url, period, timeout, due_in, *columns.values()))[0][0]


def step_until(consumer, conn, condition, timeout: float, what: str):
    """Drive a consumer's loop body by hand until `condition()` holds."""
    def one():
        consumer.collect_finished()
        consumer.release_handed_back(conn)
        consumer.flush(conn)
        consumer.claim(conn)
        return condition()
    return wait_until(one, timeout, what, interval=0.05)


@pytest.fixture
def consumer_for(dsn):
    from sitewatch.run.consumer import Consumer
    made = []

    def make(**settings):
        consumer = Consumer(make_ctx(dsn, **settings))
        made.append(consumer)
        return consumer
    yield make
    for consumer in made:
        consumer.threads.stop()
        consumer.db.close()


def test_a_consumer_re_claiming_its_own_expired_task_tracks_both_attempts(db, consumer_for, hostile_server):
    from sitewatch.db import store
    consumer = consumer_for(consumer__lease_margin=0.1, consumer__flush_interval=0.05)
    add_url(db, hostile_server.url("/slow/1.5"), timeout=5)
    store.enqueue_due(db, 10)
    conn = consumer.db.get()
    consumer.claim(conn)
    assert [k[1] for k in consumer.in_flight] == [1]
    # The lease runs out while attempt 1 is still running (a frozen or overloaded consumer), and
    # this same consumer claims the task again.
    query(db, "UPDATE task SET available_at = now(), lease_expires_at = now() RETURNING id")
    consumer.maybe_more = True
    consumer.claim(conn)
    assert sorted(k[1] for k in consumer.in_flight) == [1, 2]      # both tracked, neither overwritten
    step_until(consumer, conn, lambda: not consumer.in_flight and not consumer.pending, 10,
               "both attempts finished and written")
    assert query(db, "SELECT attempt, ok FROM task_result") == [(2, True)]
    assert consumer.stats["refused"] == 1                          # attempt 1 refused by the fence
    assert query(db, "SELECT count(*) FROM task") == [(0,)]


def test_a_stored_value_this_version_cannot_read_records_that_slot_and_checks_the_rest(
        db, consumer_for, hostile_server):
    from sitewatch.db import store
    consumer = consumer_for(consumer__flush_interval=0.05)
    # expected_status as a newer version might write it; target_for cannot parse it.
    odd = add_url(db, hostile_server.url("/ok?odd"), expected_status="2xx;v2")
    fine = add_url(db, hostile_server.url("/ok?fine"))
    store.enqueue_due(db, 10)
    conn = consumer.db.get()
    step_until(consumer, conn, lambda: query(db, "SELECT count(*) FROM task_result") == [(2,)], 10,
               "both slots recorded")
    rows = dict((uid, rest) for uid, *rest in query(db, "SELECT url_id, ok, error_kind, error FROM task_result"))
    assert rows[fine][:2] == [True, None]
    ok, kind, error = rows[odd]
    assert (ok, kind) == (False, "lost")               # the monitor's failure: no incident, no crash
    assert "cannot read this URL's stored settings" in error
    assert consumer.stats["unreadable"] == 1


def test_clock_offset_is_measured_again_while_running(db, consumer_for):
    import datetime
    import threading
    consumer = consumer_for()
    consumer.db.get()
    assert abs(consumer.clock_offset.total_seconds()) < 1.0
    # As if either clock had been stepped since the connection was made, a sync ago.
    consumer.clock_offset = datetime.timedelta(hours=1)
    consumer.next_clock_sync = time.monotonic() + 0.5
    loop = threading.Thread(target=consumer.run, daemon=True)
    loop.start()
    try:
        wait_until(lambda: abs(consumer.clock_offset.total_seconds()) < 1.0, 5, "the offset measured again")
        assert consumer.next_clock_sync > time.monotonic() + 30
    finally:
        consumer.ctx.stop_requested = True
        consumer.ctx.wake()
        loop.join(10)
    assert not loop.is_alive()


def test_producer_does_not_spin_while_the_due_rows_are_locked_elsewhere(db, dsn):
    import psycopg2

    from sitewatch.run.producer import Producer
    add_url(db, "http://locked.example/", due_in=-5)
    holder = psycopg2.connect(dsn)          # another producer, or a url import, holds the row
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT id FROM url FOR UPDATE")
        producer = Producer(make_ctx(dsn, role="producer", producer__poll_interval=0.5))
        conn = producer.db.get()
        assert producer.step(conn) >= 0.5               # was 0.02 s: 50 statements a second for nothing
        holder.rollback()
        assert producer.step(conn) <= 0.5 and producer.enqueued == 1
        producer.db.close()
    finally:
        holder.close()


def test_producer_holds_while_a_batch_of_tasks_waits_and_counts_the_held_slots_once(db, dsn):
    """Backpressure: with a batch of claimable tasks waiting, the producer enqueues nothing and
    rewrites no url row (it rewrote each due row once a period to count a skip: most of a
    saturated run's database time); once the consumers claim, it goes on, oldest first, and the
    slots held back are skipped and counted once, as after any stall."""
    from sitewatch.db import store
    from sitewatch.run.producer import HOLD_SLEEP, Producer
    for i in range(25):                              # each 2.5 periods late: 2 older slots skipped
        add_url(db, f"http://held{i}.example/", period=60, due_in=-150 - i)
    producer = Producer(make_ctx(dsn, role="producer", producer__batch_size=10))
    conn = producer.db.get()
    try:
        def versions():
            return query(db, "SELECT id, xmin::text FROM url ORDER BY id")

        assert producer.step(conn) == HOLD_SLEEP     # one batch enqueued, then it holds
        assert query(db, "SELECT count(*) FROM task") == [(10,)]
        before = versions()
        assert producer.step(conn) == HOLD_SLEEP     # nothing claimed: nothing enqueued, no row rewritten
        assert query(db, "SELECT count(*) FROM task") == [(10,)] and versions() == before
        assert store.claim_tasks(db, "c", 10, 10.0, 3)[0]                       # a consumer claims them
        assert producer.step(conn) == HOLD_SLEEP
        assert store.claim_tasks(db, "c", 10, 10.0, 3)[0]
        assert producer.step(conn) != HOLD_SLEEP     # the last 5: fewer than a batch waits
        assert producer.held == 3 and producer.enqueued == 25
        # The oldest first, each slot once: one task per URL, for its latest due slot; 2 skipped each.
        assert query(db, """SELECT count(DISTINCT t.url_id), sum(u.skipped_slots),
                                   bool_and(t.scheduled_at + interval '60 s' = u.next_check_at
                                            AND u.next_check_at > now())
                            FROM task t JOIN url u ON u.id = t.url_id""") == [(25, 50, True)]
    finally:
        producer.db.close()


def test_producer_is_not_held_by_another_regions_waiting_tasks(db, dsn):
    """A host counts only the tasks its own consumers claim: region b's waiting tasks (a region
    with no host up, say) must not stop a host without a region from enqueueing."""
    from sitewatch.run.producer import HOLD_SLEEP, Producer
    for i in range(12):
        uid = add_url(db, f"http://elsewhere{i}.example/", due_in=30)
        query(db, "INSERT INTO task (url_id, scheduled_at, available_at, region) VALUES (%s, now(), now(), 'b') "
              "RETURNING id",
              (uid,))
    add_url(db, "http://here.example/", due_in=-1)
    producer = Producer(make_ctx(dsn, role="producer", producer__batch_size=10))
    conn = producer.db.get()
    try:
        assert producer.step(conn) != HOLD_SLEEP and producer.enqueued == 1 and producer.held == 0
        region_b = Producer(make_ctx(dsn, role="producer", producer__batch_size=10, region="b"))
        try:
            add_url(db, "http://there.example/", due_in=-1)
            assert region_b.step(region_b.db.get()) == HOLD_SLEEP and region_b.enqueued == 0
        finally:
            region_b.db.close()
    finally:
        producer.db.close()


def test_database_connections_bound_unacknowledged_sends(dsn):
    import psycopg2.extensions

    from sitewatch.db.database import connect, tcp_user_timeout_ms
    if psycopg2.extensions.parse_dsn(dsn).get("host", "").startswith("/"):
        pytest.skip("unix-socket DSN: no TCP")
    conn = connect(dsn, 5.0, "test")
    try:
        sock = socket.socket(fileno=os.dup(conn.fileno()))
        try:
            if sock.family not in (socket.AF_INET, socket.AF_INET6):
                pytest.skip("not a TCP connection")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == tcp_user_timeout_ms(5.0) == 10000
        finally:
            sock.close()
    finally:
        conn.close()


# --- issue 10: the concurrency limit's rule ------------------------------------------------------


def test_limit_grows_with_waiting_work_up_to_the_ceiling_and_not_when_cpu_bound():
    from sitewatch.run.concurrency import LIMIT_START, ConcurrencyLimit
    limit = ConcurrencyLimit(ceiling=1000)
    assert limit.value == LIMIT_START
    seen = [limit.value]
    for _ in range(20):       # hanging checks fill every permitted slot; the CPU is idle
        seen.append(limit.update(work_waiting=True, in_flight=limit.value, own_cpu=0.05, core_busy=0.3))
    assert seen == sorted(seen) and seen[-1] == 1000 and limit.at_ceiling
    assert seen.index(1000) <= 8                      # seconds to reach it from the start

    busy_host = ConcurrencyLimit(ceiling=1000)        # another program keeps the core busy:
    busy_host.update(work_waiting=True, in_flight=100, own_cpu=0.05, core_busy=1.0)
    assert busy_host.value > LIMIT_START              # checks that only wait on the network still grow

    # Another program takes the core and the consumer's own loop comes round late (issue 18):
    # more threads would only make it later, and a loop silent for 30 s is killed. It holds,
    # gives checks back while very late, and grows again once the loop keeps time.
    starved = ConcurrencyLimit(ceiling=1000, start=500)
    starved.update(work_waiting=True, in_flight=500, own_cpu=0.1, core_busy=1.0, loop_late=0.8)
    assert starved.value == 500
    starved.update(work_waiting=True, in_flight=500, own_cpu=0.1, core_busy=1.0, loop_late=3.0)
    assert starved.value == 400
    for _ in range(30):
        starved.update(work_waiting=True, in_flight=starved.value, own_cpu=0.1, core_busy=1.0, loop_late=3.0)
    assert starved.value == starved.floor
    starved.update(work_waiting=True, in_flight=starved.value, own_cpu=0.1, core_busy=1.0, loop_late=0.01)
    assert starved.value > starved.floor

    saturated = ConcurrencyLimit(ceiling=1000, start=400)   # this consumer is the CPU's load:
    for _ in range(5):
        saturated.update(work_waiting=True, in_flight=saturated.value, own_cpu=0.6, core_busy=0.99)
    assert saturated.value == 400                     # holds: more would queue on the GIL, fewer
                                                      # would mean smaller batches (half the throughput)

    idle = ConcurrencyLimit(ceiling=1000)
    idle.update(work_waiting=False, in_flight=3, own_cpu=0.01, core_busy=0.1)
    assert idle.value == LIMIT_START                  # no waiting work: no growth

    small = ConcurrencyLimit(ceiling=20)              # a ceiling below the start is the start
    assert small.value == 20 and small.at_ceiling
    assert small.back_off(in_flight=10) == 10         # out of descriptors: hold fewer checks


def test_check_threads_start_on_demand_and_exit_after_idling():
    import threading

    from sitewatch.run.concurrency import CheckThreads
    gate = threading.Event()
    done = []
    pool = CheckThreads(lambda n: (gate.wait(5), done.append(n)), idle_exit=0.3)
    assert pool.size == 0
    for n in range(50):
        pool.submit(n)
    assert pool.ensure(50) and pool.size == 50
    gate.set()
    wait_until(lambda: len(done) == 50, 5, "every item done")
    wait_until(lambda: pool.size == 0, 5, "idle threads to exit")
    pool.submit(99)                                   # work after the shrink gets a thread again
    pool.ensure(1)
    wait_until(lambda: 99 in done, 5, "the new item done")
