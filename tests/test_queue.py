"""The queue's SQL semantics, on a real PostgreSQL: producer (enqueue_due), consumers (claim,
complete, release), URL removal, and the plans of the hot queries.

Time is controlled without sleeping: cursors, available_at and leases are moved by SQL relative
to the database's now(). Every statement under test runs in autocommit mode, as in production.
"""

import datetime
import select
import threading
from concurrent.futures import ThreadPoolExecutor

import psycopg2
import pytest

from sitewatch import config
from sitewatch.db import store
from sitewatch.urlspec import make_entry
from tests.conftest import _fresh_database

CHECK = config.load({}).check
PERIOD = 60
MARGIN = 10.0          # lease margin passed to claim_tasks
MAX_ATTEMPTS = 3


# --------------------------------------------------------------------------- helpers


def connect(dsn):
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    return conn


def entry(url, **options):
    return make_entry({"url": url, **options}, CHECK)


def q(conn, sql, params=None):
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else None


def q1(conn, sql, params=None):
    return q(conn, sql, params)[0][0]


def url_id(conn, url):
    return q1(conn, "SELECT id FROM url WHERE url = %s", (url,))


def add_many(conn, n, period=PERIOD, due_by="random() * 50", timeout=5.0):
    """n URLs by plain SQL; next_check_at = now() - (due_by) seconds (an SQL expression of i)."""
    q(conn, f"""INSERT INTO url (url, period, timeout, next_check_at)
                SELECT 'http://h' || i || '.example/', {period}, {timeout},
                       now() - make_interval(secs => {due_by})
                FROM generate_series(1, {n}) AS i""")


def set_cursor(conn, url, seconds_ago):
    """Put a URL's cursor `seconds_ago` seconds before now(); returns the new cursor."""
    return q1(conn, "UPDATE url SET next_check_at = now() - make_interval(secs => %s) WHERE url = %s "
                    "RETURNING next_check_at", (seconds_ago, url))


def expire_leases(conn, where="true"):
    q(conn, f"UPDATE task SET available_at = now() - interval '1 second', "
            f"lease_expires_at = now() - interval '1 second' WHERE {where}")


def claim(conn, owner, limit=100, max_attempts=MAX_ATTEMPTS):
    return store.claim_tasks(conn, owner, limit, MARGIN, max_attempts)[0]


def result_row(task, owner, *, ok=True, response_time_ms=12.5, status_code=200, regex_matched=None,
               error_kind=None, error=None, cert_days_left=None, started_at=None):
    started_at = started_at or datetime.datetime.now(datetime.timezone.utc)
    return (task["id"], task["attempts"], owner, started_at, response_time_ms, status_code, regex_matched,
            ok, error_kind, error, cert_days_left)


def drain_enqueue(conn, batch, barrier=None):
    """Call enqueue_due until it finds nothing due; returns the summed (due, enqueued, skipped)."""
    if barrier is not None:
        barrier.wait()
    totals = [0, 0, 0]
    while True:
        due, enqueued, skipped = store.enqueue_due(conn, batch)
        totals = [totals[0] + due, totals[1] + enqueued, totals[2] + skipped]
        if due == 0:
            return tuple(totals)


# --------------------------------------------------------------------------- 1. enqueue, fixed rate


def test_enqueue_one_task_per_due_url_at_the_cursor_and_advance_by_one_period(db, dsn):
    store.import_urls(db, [entry(f"http://a{i}.example/", period=PERIOD) for i in range(3)]
                      + [entry("http://later.example/", period=PERIOD)])
    cursors = {f"http://a{i}.example/": set_cursor(db, f"http://a{i}.example/", s)
               for i, s in enumerate([2.5, 10.0, 59.0])}
    later = q1(db, "UPDATE url SET next_check_at = now() + interval '5 seconds' "
                   "WHERE url = 'http://later.example/' RETURNING next_check_at")
    listener = connect(dsn)
    store.listen(listener)

    assert store.enqueue_due(db, 100) == (3, 3, 0)

    rows = q(db, "SELECT u.url, t.scheduled_at, u.next_check_at, t.status, t.attempts, t.lease_owner, "
                 "t.available_at <= now() FROM task t JOIN url u ON u.id = t.url_id")
    assert len(rows) == 3
    for url, scheduled_at, next_check_at, status, attempts, owner, available in rows:
        assert scheduled_at == cursors[url]                     # the slot is the cursor, not now()
        # Fixed rate: exactly one period after the slot, however late the producer ran.
        assert next_check_at == cursors[url] + datetime.timedelta(seconds=PERIOD)
        assert (status, attempts, owner, available) == (0, 0, None, True)
    assert q1(db, "SELECT next_check_at FROM url WHERE url = 'http://later.example/'") == later
    assert q1(db, "SELECT sum(skipped_slots) FROM url") == 0

    # Consumers are woken by NOTIFY on the channel they LISTEN to.
    select.select([listener], [], [], 2.0)
    listener.poll()
    assert [n.channel for n in listener.notifies] == [store.LISTEN_CHANNEL]
    listener.notifies.clear()

    # Nothing due any more: nothing enqueued, nothing notified.
    assert store.enqueue_due(db, 100) == (0, 0, 0)
    assert not select.select([listener], [], [], 0.3)[0]
    listener.close()


def test_enqueue_respects_the_batch_size_oldest_first(db):
    add_many(db, 10, due_by="i")      # h10 is the most overdue
    assert store.enqueue_due(db, 4) == (4, 4, 0)
    ids = q(db, "SELECT u.url FROM task t JOIN url u ON u.id = t.url_id ORDER BY u.url")
    assert sorted(u for (u,) in ids) == sorted(f"http://h{i}.example/" for i in (7, 8, 9, 10))
    assert drain_enqueue(db, 4) == (6, 6, 0)


def test_add_url_is_due_at_once_and_seconds_until_due(db):
    assert store.seconds_until_due(db) is None
    store.add_url(db, entry("http://new.example/", period=PERIOD))
    assert store.enqueue_due(db, 10) == (1, 1, 0)
    assert PERIOD - 2 < store.seconds_until_due(db) <= PERIOD
    store.add_url(db, entry("http://soon.example/", period=PERIOD))
    set_cursor(db, "http://soon.example/", -5.0)                # due in 5 s: the earliest cursor
    assert 3 < store.seconds_until_due(db) <= 5
    set_cursor(db, "http://soon.example/", 2.0)                 # overdue: negative
    assert -3 < store.seconds_until_due(db) <= -2


# --------------------------------------------------------------------------- 2. exactly once under races


@pytest.mark.parametrize("producers", [2, 4])
def test_concurrent_producers_enqueue_each_slot_exactly_once(dsn, db, producers):
    add_many(db, 500)
    before = dict(q(db, "SELECT id, next_check_at FROM url"))
    conns = [connect(dsn) for _ in range(producers)]
    barrier = threading.Barrier(producers)
    try:
        with ThreadPoolExecutor(producers) as pool:
            # Small, different batch sizes: many statements racing for the same rows.
            futures = [pool.submit(drain_enqueue, c, 3 + i, barrier) for i, c in enumerate(conns)]
            totals = [f.result() for f in futures]      # re-raises any error from a thread
    finally:
        for c in conns:
            c.close()

    assert sum(t[1] for t in totals) == 500
    assert sum(t[2] for t in totals) == 0
    assert sum(t[0] for t in totals) == 500
    assert q1(db, "SELECT count(*) FROM task") == 500
    assert q1(db, "SELECT count(DISTINCT url_id) FROM task") == 500
    rows = q(db, "SELECT u.id, t.scheduled_at, u.next_check_at, u.skipped_slots "
                 "FROM url u JOIN task t ON t.url_id = u.id")
    for uid, scheduled_at, next_check_at, skipped in rows:
        assert scheduled_at == before[uid]
        assert next_check_at == before[uid] + datetime.timedelta(seconds=PERIOD)   # advanced once
        assert skipped == 0
    assert store.enqueue_due(db, 1000) == (0, 0, 0)


# --------------------------------------------------------------------------- 3. no pile-up


def test_outstanding_task_blocks_a_second_task_and_counts_a_skip(db):
    store.add_url(db, entry("http://slow.example/", period=PERIOD))
    first = set_cursor(db, "http://slow.example/", 1.0)
    assert store.enqueue_due(db, 10) == (1, 1, 0)
    # The next slot comes due while the first task is still outstanding (here: leased).
    [task] = claim(db, "c1")
    second = set_cursor(db, "http://slow.example/", 0.5)

    assert store.enqueue_due(db, 10) == (1, 0, 1)
    assert q(db, "SELECT scheduled_at, attempts, lease_owner FROM task") == [(first, 1, "c1")]
    next_check_at, skipped = q(db, "SELECT next_check_at, skipped_slots FROM url")[0]
    assert next_check_at == second + datetime.timedelta(seconds=PERIOD)
    assert skipped == 1

    # Once the result is in, the following slot is enqueued again.
    assert store.complete_tasks(db, [result_row(task, "c1")]) == []
    third = set_cursor(db, "http://slow.example/", 0.5)
    assert store.enqueue_due(db, 10) == (1, 1, 0)
    assert q1(db, "SELECT scheduled_at FROM task") == third


# --------------------------------------------------------------------------- 4. skip ahead


@pytest.mark.parametrize("periods_late, skipped", [(0.5, 0), (1.2, 1), (3.5, 3), (10.25, 10)])
def test_after_a_stall_the_latest_due_slot_is_enqueued_and_only_older_ones_skipped(db, periods_late, skipped):
    # DESIGN.md section 3: a URL 72 s late with period 60 gets its slot at +60 s checked now,
    # not skipped to +120 s (which left it unchecked for about two periods after an outage).
    store.add_url(db, entry("http://behind.example/", period=PERIOD))
    cursor = set_cursor(db, "http://behind.example/", periods_late * PERIOD)

    due, enqueued, skipped_now = store.enqueue_due(db, 10)
    now = store.now(db)
    next_check_at, skipped_slots = q(db, "SELECT next_check_at, skipped_slots FROM url")[0]

    assert (due, enqueued, skipped_now, skipped_slots) == (1, 1, skipped, skipped)
    k = (next_check_at - cursor) / datetime.timedelta(seconds=PERIOD)
    assert k == int(k)                                     # same phase: a whole number of periods
    assert next_check_at > now                             # a future slot ...
    assert next_check_at - datetime.timedelta(seconds=PERIOD) <= now   # ... the first one
    assert k == int(periods_late) + 1
    latest_due = cursor + int(periods_late) * datetime.timedelta(seconds=PERIOD)
    assert q1(db, "SELECT scheduled_at FROM task") == latest_due        # the slot due now is checked
    assert latest_due <= now < latest_due + datetime.timedelta(seconds=PERIOD)


def test_late_url_with_a_task_outstanding_skips_the_due_slot_too(db):
    store.add_url(db, entry("http://busy.example/", period=PERIOD))
    set_cursor(db, "http://busy.example/", 1.0)
    assert store.enqueue_due(db, 10) == (1, 1, 0)
    claim(db, "c1")                                        # still being checked ...
    set_cursor(db, "http://busy.example/", 2.5 * PERIOD)   # ... while 2.5 periods pass
    assert store.enqueue_due(db, 10) == (1, 0, 3)          # two older slots and the due one
    assert q1(db, "SELECT skipped_slots FROM url") == 3


def test_skip_ahead_mixed_batch_sums_skips(db):
    add_many(db, 3, due_by=f"(ARRAY[0.5, 1.5, 3.5])[i] * {PERIOD}")
    assert store.enqueue_due(db, 10) == (3, 3, 4)
    assert q1(db, "SELECT sum(skipped_slots) FROM url") == 4
    assert q1(db, "SELECT count(*) FROM url WHERE next_check_at <= now()") == 0


def test_a_long_import_never_moves_a_schedule_back_before_an_enqueued_slot(db, dsn):
    fast = config.load({"MIN_PERIOD": "1"}).check
    store.add_url(db, entry("http://moving.example/", period=PERIOD))
    importer = psycopg2.connect(dsn)
    try:
        with importer.cursor() as cur:
            cur.execute("SELECT now()")        # the import's transaction began here (now() is fixed)
        # Meanwhile the producer enqueues the URL's slot (later than the import's now()), and the
        # check is recorded; then the import changes the period to 1 s.
        import time
        time.sleep(1.5)
        slot = set_cursor(db, "http://moving.example/", 0.0)
        assert store.enqueue_due(db, 10) == (1, 1, 0)
        [task] = claim(db, "c")
        assert store.complete_tasks(db, [result_row(task, "c")]) == []
        store.import_urls(importer, [make_entry({"url": "http://moving.example/", "period": 1}, fast)])
    finally:
        importer.close()
    cursor = q1(db, "SELECT next_check_at FROM url")
    assert cursor > slot, f"the schedule moved back to {cursor}, before the slot {slot} already checked"


def test_import_commits_in_chunks_so_the_producer_is_not_held_off(db):
    n = store.IMPORT_CHUNK * 2 + 10
    store.import_urls(db, [entry(f"http://chunk{i}.example/") for i in range(n)])
    assert q1(db, "SELECT count(*) FROM url") == n
    # One transaction per chunk: rows of the first chunk were unlocked while the rest was written.
    assert q1(db, "SELECT count(DISTINCT xmin::text) FROM url") == 3


# --------------------------------------------------------------------------- 5. claim


def test_claim_leases_at_most_limit_for_timeout_plus_margin(db):
    store.import_urls(db, [entry(f"http://c{i}.example/", period=PERIOD, timeout=3 + i % 2, regex="up")
                           for i in range(10)])
    q(db, "UPDATE url SET next_check_at = now() - interval '1 second'")
    assert store.enqueue_due(db, 100)[1] == 10
    # Two tasks are not yet available (e.g. a lease that has not expired).
    q(db, "UPDATE task SET available_at = now() + interval '30 seconds' WHERE url_id IN "
          "(SELECT id FROM url WHERE url IN ('http://c0.example/', 'http://c1.example/'))")

    tasks = claim(db, "owner-1", limit=3)
    assert len(tasks) == 3
    task = tasks[0]
    assert set(task) >= {"id", "attempts", "url_id", "scheduled_at", "url", "regex", "timeout", "method",
                         "expected_status", "max_redirects", "verify_tls"}
    assert task["regex"] == "up" and task["method"] == "GET"
    rows = q(db, "SELECT t.status, t.lease_owner, t.attempts, u.timeout, "
                 "extract(epoch FROM t.lease_expires_at - now()), t.available_at = t.lease_expires_at "
                 "FROM task t JOIN url u ON u.id = t.url_id WHERE t.id = ANY(%s)",
             ([t["id"] for t in tasks],))
    assert len(rows) == 3
    for status, owner, attempts, timeout, lease_left, same in rows:
        assert (status, owner, attempts, same) == (1, "owner-1", 1, True)
        assert timeout + MARGIN - 2 < float(lease_left) <= timeout + MARGIN

    rest = claim(db, "owner-2", limit=100)
    assert len(rest) == 5                                   # 10 - 3 claimed - 2 not available
    claimed_urls = {t["url"] for t in tasks + rest}
    assert not claimed_urls & {"http://c0.example/", "http://c1.example/"}
    assert claim(db, "owner-3", limit=100) == []
    assert store.queue_depth(db) == (2, 8)


def test_concurrent_claims_never_share_a_task(dsn, db):
    add_many(db, 400)
    assert drain_enqueue(db, 1000)[1] == 400
    conns = [connect(dsn) for _ in range(2)]
    barrier = threading.Barrier(2)

    def consume(conn, owner):
        barrier.wait()
        got = []
        while True:
            tasks = claim(conn, owner, limit=7)
            if not tasks:
                return got
            got.extend(t["id"] for t in tasks)

    try:
        with ThreadPoolExecutor(2) as pool:
            a, b = [f.result() for f in [pool.submit(consume, c, f"o{i}") for i, c in enumerate(conns)]]
    finally:
        for c in conns:
            c.close()
    assert len(a) == len(set(a)) and len(b) == len(set(b))
    assert not set(a) & set(b)
    assert len(a) + len(b) == 400
    assert q(db, "SELECT lease_owner, count(*), max(attempts) FROM task GROUP BY 1 ORDER BY 1") == [
        ("o0", len(a), 1), ("o1", len(b), 1)]


# --------------------------------------------------------------------------- 6. expired lease


def test_expired_lease_is_reclaimed_and_the_old_owner_is_fenced_out(db):
    store.add_url(db, entry("http://lease.example/", period=PERIOD))
    store.enqueue_due(db, 10)
    [first] = claim(db, "A")
    assert claim(db, "B") == []                             # lease still valid

    expire_leases(db)
    [second] = claim(db, "B")
    assert second["id"] == first["id"] and second["attempts"] == 2

    # A finishes late: refused, nothing written, B's lease untouched.
    assert store.complete_tasks(db, [result_row(first, "A")]) == [first["id"]]
    assert q1(db, "SELECT count(*) FROM task_result") == 0
    assert q(db, "SELECT lease_owner, attempts FROM task") == [("B", 2)]

    # B's completion is the one recorded.
    assert store.complete_tasks(db, [result_row(second, "B", status_code=204)]) == []
    assert q(db, "SELECT scheduled_at, attempt, checked_by, status_code FROM task_result") == [
        (first["scheduled_at"], 2, "B", 204)]
    assert q1(db, "SELECT count(*) FROM task") == 0
    # And a replay of it changes nothing.
    assert store.complete_tasks(db, [result_row(second, "B")]) == [second["id"]]
    assert q1(db, "SELECT count(*) FROM task_result") == 1


def claimed_twice_by(db, owner, url):
    """A task claimed by `owner`, its lease expired, and claimed again by the same owner."""
    store.add_url(db, entry(url, period=PERIOD))
    store.enqueue_due(db, 10)
    [first] = claim(db, owner)
    expire_leases(db)
    [second] = claim(db, owner)
    return first, second


def test_same_owner_new_attempt_fences_its_own_stale_attempt(db):
    first, second = claimed_twice_by(db, "A", "http://again.example/")
    assert store.complete_tasks(db, [result_row(first, "A")]) == [first["id"]]
    assert store.complete_tasks(db, [result_row(second, "A")]) == []
    assert q1(db, "SELECT attempt FROM task_result") == 2


def test_one_batch_holding_both_attempts_of_a_task_records_only_the_current_one(db):
    # A consumer re-claims its own expired task; both attempts' results land in one batch.
    first, second = claimed_twice_by(db, "A", "http://twice.example/")
    refused = store.complete_tasks(db, [result_row(first, "A", status_code=500, ok=False, error_kind="status"),
                                        result_row(second, "A", status_code=204)])
    assert refused == [first["id"]]                          # attempt 1 refused, and said so
    assert q(db, "SELECT attempt, status_code FROM task_result") == [(2, 204)]
    assert q1(db, "SELECT count(*) FROM task") == 0


# --------------------------------------------------------------------------- 7. lost after K attempts


def test_slot_recorded_as_lost_after_max_attempts(db):
    store.add_url(db, entry("http://dies.example/", period=PERIOD))
    store.add_url(db, entry("http://fine.example/", period=PERIOD))
    q(db, "UPDATE url SET next_check_at = now() + interval '1 hour' WHERE url = 'http://fine.example/'")
    assert store.enqueue_due(db, 10) == (1, 1, 0)
    dies_task, dies = q(db, "SELECT id, scheduled_at FROM task")[0]
    for attempt in range(1, MAX_ATTEMPTS + 1):
        [task] = claim(db, f"c{attempt}", limit=1)
        assert task["attempts"] == attempt and task["url"] == "http://dies.example/"
        expire_leases(db)
    q(db, "UPDATE url SET next_check_at = now() - interval '1 second' WHERE url = 'http://fine.example/'")
    assert store.enqueue_due(db, 10) == (1, 1, 0)   # a healthy task waits too, behind the expired one

    tasks, lost = store.claim_tasks(db, "last", 10, MARGIN, MAX_ATTEMPTS)
    assert [t["url"] for t in tasks] == ["http://fine.example/"]   # the lost one is not handed out
    assert lost == 1                                               # and counted (sitewatch_checks_total)
    assert q(db, "SELECT u.url FROM task t JOIN url u ON u.id = t.url_id") == [("http://fine.example/",)]
    rows = q(db, "SELECT url_id, scheduled_at, ok, error_kind, attempt, status_code, response_time_ms, "
                 "regex_matched, checked_by, error FROM task_result")
    assert len(rows) == 1
    uid, scheduled_at, ok, kind, attempt, code, rt, matched, by, error = rows[0]
    assert (uid, scheduled_at) == (url_id(db, "http://dies.example/"), dies)
    assert (ok, kind, attempt, by) == (False, "lost", MAX_ATTEMPTS, "last")
    assert (code, rt, matched) == (None, None, None)
    assert str(MAX_ATTEMPTS) in error
    # The last holder's late completion is refused.
    late = result_row({"id": dies_task, "attempts": MAX_ATTEMPTS}, f"c{MAX_ATTEMPTS}")
    assert store.complete_tasks(db, [late]) == [dies_task]
    assert q1(db, "SELECT count(*) FROM task_result") == 1


# --------------------------------------------------------------------------- 8. batched completion


ODD_ERRORS = [
    "connect: Connexion refusée à l'hôte « exämple.org » ✗",
    "tls: 証明書の検証に失敗しました",
    "quote ' double \" backslash \\ percent %s %(x)s dollar $1 $$",
    "tab\tnewline\nreturn\r bell\x07 escape\x1b[31m",
    "emoji 🙂🚀 and a lone combining \u0301 mark, RTL \u202e text",
    "x" * 5000,
]


def test_complete_writes_a_large_batch_in_one_statement(db):
    add_many(db, 300)
    assert store.enqueue_due(db, 1000)[1] == 300
    tasks = claim(db, "w", limit=300)
    assert len(tasks) == 300
    started = store.now(db)
    rows, expected = [], {}
    for i, task in enumerate(tasks):
        kind = i % 4
        if kind == 0:        # no response at all
            row = result_row(task, "w", ok=False, response_time_ms=None, status_code=None,
                             error_kind="connect", error=ODD_ERRORS[i % len(ODD_ERRORS)], started_at=started)
        elif kind == 1:      # ok, no regex
            row = result_row(task, "w", cert_days_left=42, started_at=started)
        elif kind == 2:      # regex did not match
            row = result_row(task, "w", ok=False, regex_matched=False, error_kind="regex",
                             error="regex 'ü+' did not match", started_at=started)
        else:                # status outside the expected set
            row = result_row(task, "w", ok=False, status_code=503, regex_matched=True, error_kind="status",
                             error=ODD_ERRORS[i % len(ODD_ERRORS)], started_at=started)
        rows.append(row)
        expected[(task["url_id"], task["scheduled_at"])] = row

    assert store.complete_tasks(db, rows) == []
    assert q1(db, "SELECT count(*) FROM task") == 0
    got = q(db, "SELECT url_id, scheduled_at, attempt, checked_by, started_at, response_time_ms, "
                "status_code, regex_matched, ok, error_kind, error, cert_days_left FROM task_result")
    assert len(got) == 300
    for uid, scheduled_at, *values in got:
        row = expected[(uid, scheduled_at)]
        assert tuple(values) == row[1:]
    # One statement, so one transaction: every row has the same recorded_at.
    assert q1(db, "SELECT count(DISTINCT recorded_at) FROM task_result") == 1

    # UNIQUE (url_id, scheduled_at): the same slot again (a re-enqueued task) is not recorded twice.
    uid, scheduled_at = next(iter(expected))
    q(db, "INSERT INTO task (url_id, scheduled_at, available_at) VALUES (%s, %s, now())", (uid, scheduled_at))
    [again] = claim(db, "w2")
    assert store.complete_tasks(db, [result_row(again, "w2", ok=False, status_code=500)]) == []
    assert q1(db, "SELECT count(*) FROM task_result") == 300
    assert q(db, "SELECT checked_by, attempt FROM task_result WHERE url_id = %s", (uid,)) == [("w", 1)]
    assert q1(db, "SELECT count(*) FROM task") == 0


def test_complete_mixed_batch_refuses_only_the_fenced_rows(db):
    add_many(db, 3)
    store.enqueue_due(db, 10)
    mine = claim(db, "me")
    stale = dict(mine[0], attempts=mine[0]["attempts"] + 1)     # an attempt we do not hold
    refused = store.complete_tasks(db, [result_row(mine[1], "me"), result_row(stale, "me"),
                                        result_row(mine[2], "someone-else")])
    assert sorted(refused) == sorted([mine[0]["id"], mine[2]["id"]])
    assert q1(db, "SELECT count(*) FROM task_result") == 1
    assert q1(db, "SELECT count(*) FROM task") == 2


# --------------------------------------------------------------------------- 9. release


def test_release_hands_back_unstarted_tasks_without_consuming_an_attempt(db):
    add_many(db, 3)
    store.enqueue_due(db, 10)
    tasks = claim(db, "A")
    ids = [t["id"] for t in tasks]

    store.release_tasks(db, "B", ids)                          # not B's: nothing happens
    assert q1(db, "SELECT count(*) FROM task WHERE lease_owner = 'A' AND status = 1 AND attempts = 1") == 3

    store.release_tasks(db, "A", ids[:2])
    rows = q(db, "SELECT status, lease_owner, lease_expires_at, attempts, available_at <= now() "
                 "FROM task WHERE id = ANY(%s)", (ids[:2],))
    assert rows == [(0, None, None, 0, True)] * 2
    assert q(db, "SELECT status, lease_owner, attempts FROM task WHERE id = %s", (ids[2],)) == [(1, "A", 1)]
    assert store.queue_depth(db) == (2, 1)

    again = claim(db, "B")                                     # claimable at once
    assert sorted(t["id"] for t in again) == sorted(ids[:2])
    assert all(t["attempts"] == 1 for t in again)
    assert store.complete_tasks(db, [result_row(tasks[0], "A")]) == [ids[0]]   # A gave it up
    store.release_tasks(db, "A", [])                           # no-op, no SQL error


# --------------------------------------------------------------------------- 10. remove a URL


def test_remove_url_drops_its_task_keeps_history_and_fences_the_consumer(db):
    store.add_url(db, entry("http://gone.example/", period=PERIOD))
    store.add_url(db, entry("http://stays.example/", period=PERIOD))
    store.enqueue_due(db, 10)
    first = claim(db, "w")
    assert store.complete_tasks(db, [result_row(t, "w") for t in first]) == []
    q(db, "UPDATE url SET next_check_at = now() - interval '1 second'")
    store.enqueue_due(db, 10)
    tasks = {t["url"]: t for t in claim(db, "w")}
    gone_id = url_id(db, "http://gone.example/")

    store.remove_url(db, gone_id)
    assert q1(db, "SELECT count(*) FROM task WHERE url_id = %s", (gone_id,)) == 0
    assert q1(db, "SELECT count(*) FROM task_result WHERE url_id = %s", (gone_id,)) == 1

    refused = store.complete_tasks(db, [result_row(t, "w") for t in tasks.values()])
    assert refused == [tasks["http://gone.example/"]["id"]]
    assert q1(db, "SELECT count(*) FROM task_result WHERE url_id = %s", (gone_id,)) == 1
    assert q1(db, "SELECT count(*) FROM task_result") == 3


# --------------------------------------------------------------------------- 11. plans


def explain(conn, name, params):
    return "\n".join(r[0] for r in q(conn, "EXPLAIN " + store.QUERIES[name], params))


def _fill_big_queue(db):
    """~20,000 URLs (cursors spread over a period, ~1/10 due) and ~5,000 tasks (~1/10 claimable)."""
    q(db, """INSERT INTO url (url, period, timeout, next_check_at)
             SELECT 'http://big' || i || '.example/', 300, 5, now() + make_interval(secs => (i % 300) - 30)
             FROM generate_series(1, 20000) AS i""")
    q(db, """INSERT INTO task (url_id, scheduled_at, available_at, status, attempts, lease_owner)
             SELECT id, now() - interval '1 minute',
                    CASE WHEN id % 10 = 0 THEN now() - interval '1 second'
                         ELSE now() + interval '15 seconds' END,
                    CASE WHEN id % 10 = 0 THEN 0 ELSE 1 END, CASE WHEN id % 10 = 0 THEN 0 ELSE 1 END,
                    CASE WHEN id % 10 = 0 THEN NULL ELSE 'x' END
             FROM url WHERE id % 4 = 0""")
    q(db, "ANALYZE url")
    q(db, "ANALYZE task")
    return db


@pytest.fixture(scope="module")
def big_queue(pg_base_dsn, template_db):
    """_fill_big_queue's data, once for the module's tests that only read it (plans; an executed
    plan rolled back); a connection in autocommit."""
    for dsn in _fresh_database(pg_base_dsn, "sitewatch_q", template_db):
        conn = psycopg2.connect(dsn)
        conn.autocommit = True
        yield _fill_big_queue(conn)
        conn.close()


@pytest.fixture
def own_big_queue(db):
    """_fill_big_queue's data in the test's own database, for a test that changes it."""
    return _fill_big_queue(db)


def test_enqueue_plan_uses_the_cursor_index(big_queue):
    # 2000 is the default producer.batch_size; ~2,000 URLs are due.
    plan = explain(big_queue, "enqueue_due", {"batch": 2000})
    assert "url_next_check_at_idx" in plan, plan
    assert "Seq Scan on url" not in plan, plan
    assert "Seq Scan on task" not in plan, plan


def _plan_nodes(node):
    """Every node of a JSON plan tree, depth first."""
    yield node
    for child in node.get("Plans", ()):
        yield from _plan_nodes(child)


def test_enqueue_executes_without_quadratic_joins(big_queue):
    """Executed (and rolled back): no CTE is rescanned once per row of another (batch squared).

    FORMAT JSON: numbers, not text, so the assertions hold on every server version
    (PostgreSQL 18 prints "rows=2000.00" in the text format, 15 prints "rows=2000").
    """
    db = big_queue
    with db.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, FORMAT JSON) " + store.QUERIES["enqueue_due"],
                    {"batch": 2000})
        nodes = list(_plan_nodes(cur.fetchone()[0][0]["Plan"]))
        cur.execute("ROLLBACK")
    summary = [(n["Node Type"], n["Actual Rows"], n["Actual Loops"]) for n in nodes]
    assert any(rows == 2000 and loops == 1 for _, rows, loops in summary), summary   # the batch was full
    cte_scans = [n for n in nodes if n["Node Type"] == "CTE Scan"]
    assert cte_scans and all(n["Actual Loops"] == 1 for n in cte_scans), summary
    assert not any(n["Node Type"] == "Seq Scan" for n in nodes), summary
    plan = explain(big_queue, "seconds_until_due", None)
    assert "url_next_check_at_idx" in plan and "Seq Scan" not in plan, plan


def test_tasks_ready_counts_the_claimable_tasks_up_to_the_limit_from_the_index(big_queue):
    """The producer's backpressure asks this several times a second: it must read at most
    `limit` index entries, never the queue."""
    claimable = q1(big_queue, "SELECT count(*) FROM task WHERE available_at <= now()")
    assert 0 < claimable < q1(big_queue, "SELECT count(*) FROM task")     # leased ones are not ready
    assert store.tasks_ready(big_queue, "", 100) == 100
    assert store.tasks_ready(big_queue, "", 100_000) == store.tasks_ready(big_queue, "a", 100_000) == claimable
    plan = explain(big_queue, "tasks_ready", {"regions": ["", "a"], "limit": 2000})
    assert "task_available_at_idx" in plan and "Seq Scan" not in plan, plan


@pytest.mark.parametrize("limit", [10, 200])
def test_claim_plan_uses_the_available_at_index(big_queue, limit):
    plan = explain(big_queue, "claim_tasks", {"owner": "o", "limit": limit, "lease_margin": MARGIN,
                                              "max_attempts": MAX_ATTEMPTS})
    assert "task_available_at_idx" in plan, plan
    assert "Seq Scan on task" not in plan, plan
    assert "Seq Scan on url" not in plan, plan


def test_big_queue_round_trip_is_correct(own_big_queue):
    """The same data, executed: the due URLs and the claimable tasks, nothing else."""
    db = own_big_queue
    # Nothing may come due between counting and draining (a loaded machine takes seconds).
    q(db, "UPDATE url SET next_check_at = next_check_at + interval '1 minute' WHERE next_check_at > now()")
    due = q1(db, "SELECT count(*) FROM url WHERE next_check_at <= now()")
    busy = q1(db, "SELECT count(*) FROM url u JOIN task t ON t.url_id = u.id WHERE u.next_check_at <= now()")
    assert drain_enqueue(db, 2000) == (due, due - busy, busy)
    claimable = q1(db, "SELECT count(*) FROM task WHERE available_at <= now()")
    assert len(claim(db, "o", limit=100000)) == claimable


# --------------------------------------------------------------------------- 12. list_urls


def test_list_urls_shows_the_most_recent_slot(db):
    store.add_url(db, entry("http://hist.example/", period=PERIOD))
    store.add_url(db, entry("http://never.example/", period=PERIOD))
    uid = url_id(db, "http://hist.example/")
    # Inserted out of order: the most recent slot is not the last row written.
    for minutes, ok, code in [(1, True, 200), (3, False, 500), (2, False, 404)]:
        q(db, "INSERT INTO task_result (url_id, scheduled_at, started_at, ok, status_code, checked_by) "
              "VALUES (%s, now() - make_interval(mins => %s), now(), %s, %s, 'x')", (uid, minutes, ok, code))
    q(db, "INSERT INTO task_result (url_id, scheduled_at, started_at, ok, status_code, checked_by) "
          "VALUES (%s, now(), now(), true, 299, 'x')", (uid + 1000,))   # another (removed) URL's history
    listed = {row["url"]: row for row in store.list_urls(db)}
    assert list(listed) == ["http://hist.example/", "http://never.example/"]
    hist = listed["http://hist.example/"]
    assert (hist["last_ok"], hist["last_status_code"]) == (True, 200)
    assert hist["last_scheduled_at"] == q1(db, "SELECT max(scheduled_at) FROM task_result WHERE url_id = %s",
                                           (uid,))
    never = listed["http://never.example/"]
    assert never["last_scheduled_at"] is None and never["last_ok"] is None
