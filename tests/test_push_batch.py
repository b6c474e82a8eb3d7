"""Group commit of pings (web/pingwriter.py): the real `sitewatch web` over HTTP on a real
PostgreSQL. Many concurrent pings each land exactly once and a 200 means the row is committed;
the pings queued while a batch is written share one transaction; a batch that fails answers
none of its pings 200 and records none of them; one rolled back for another reason is written
again ping by ping, each still exactly once."""

import threading
import time

import httpx
import psycopg2
import pytest

from tests.test_push import listener as listener  # noqa: F401  (fixture)
from tests.test_run import query, scalar, wait_until

PERIOD = 60


def add_pushes(dsn, count: int) -> list[str]:
    """push://job-N monitors (period 60 s, grace 30 s), added as `url add` adds them; their tokens."""
    from sitewatch import config, urlspec
    from sitewatch.check import push
    from sitewatch.db import pushstore
    check = config.load({}).check
    tokens = []
    conn = psycopg2.connect(dsn)
    try:
        for i in range(count):
            entry = urlspec.make_entry({"url": f"push://job-{i}", "period": PERIOD, "grace": 30}, check)
            token = push.new_token()
            pushstore.add_push(conn, entry, push.token_hash(token))
            tokens.append(token)
    finally:
        conn.close()
    return tokens


def fire(*calls):
    """Start each call in a thread of its own; returns a function that waits for them all and
    gives their results in order (an exception raised is the result)."""
    answers = [None] * len(calls)

    def run(i, call):
        try:
            answers[i] = call()
        except Exception as e:      # noqa: BLE001 - reported as the answer
            answers[i] = e
    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for t in threads:
        t.start()

    def wait():
        for t in threads:
            t.join(60)
        return answers
    return wait


def test_many_concurrent_pings_each_land_exactly_once_and_a_200_means_committed(dsn, db, listener):  # noqa: F811
    tokens = add_pushes(dsn, 20)
    web = listener()
    # 20 monitors x 6 failure pings each (a failure always settles a slot: one result per ping),
    # from 30 clients at once, so batches hold several pings of one token (pushstore's rounds)
    pings = [(token, f"ping-{t}-{k}") for k in range(6) for t, token in enumerate(tokens)]

    def client(mine):
        answers = []
        with httpx.Client(base_url=web.url, timeout=30) as http:
            check = psycopg2.connect(dsn)
            check.autocommit = True
            try:
                for token, body in mine:
                    status = http.post(f"/ping/{token}/fail", content=body).status_code
                    # a 200 is sent after the commit: the row is visible to any other connection now
                    seen = scalar(check, "SELECT count(*) FROM task_result WHERE message = %s", (body,))
                    answers.append((status, seen))
            finally:
                check.close()
        return answers
    answers = fire(*[lambda mine=pings[k::30]: client(mine) for k in range(30)])()
    flat = [a for answer in answers for a in answer]
    assert len(flat) == len(pings) and set(flat) == {(200, 1)}, answers

    rows = query(db, "SELECT u.url, count(*), count(DISTINCT r.message), min(r.scheduled_at), max(r.scheduled_at),"
                     " s.fail_streak FROM task_result r JOIN url u ON u.id = r.url_id"
                     " JOIN url_state s ON s.url_id = u.id GROUP BY u.url, s.fail_streak")
    assert len(rows) == 20
    for url, n, messages, first, last, fail_streak in rows:
        # six results, six slots in a row (each ping moved the cursor once), each applied to alerts once
        assert (n, messages, fail_streak) == (6, 6, 6), url
        assert (last - first).total_seconds() == 5 * PERIOD, url
    assert scalar(db, "SELECT count(*) FROM task_result") == len(pings)


def _writer_waiting(db) -> int | None:
    """The pid of the ping writer's backend while it waits for a row lock, else None."""
    rows = query(db, "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                     " AND application_name = 'sitewatch web' AND wait_event_type = 'Lock'")
    return rows[0][0] if rows else None


@pytest.fixture
def lockers(dsn):
    """Transactions of the test's own: lock(conn, name) holds push://NAME's row until conn ends."""
    conns = [psycopg2.connect(dsn) for _ in range(2)]
    yield conns
    for conn in conns:
        conn.close()


def lock(conn, name: str) -> None:
    with conn.cursor() as cur:
        cur.execute("SELECT id FROM url WHERE url = %s FOR UPDATE", (f"push://{name}",))


def recorded(db) -> dict:
    return dict(query(db, "SELECT u.url, count(*) FROM task_result r JOIN url u ON u.id = r.url_id GROUP BY u.url"))


def fail(web, token) -> int:
    return web.client.post(f"/ping/{token}/fail").status_code


QUEUED = 2.0    # seconds for pings sent to reach the listener and queue behind the blocked writer


def test_pings_queued_behind_a_batch_share_one_transaction(dsn, db, listener, lockers):  # noqa: F811
    tokens = add_pushes(dsn, 11)
    web = listener(SITEWATCH_DATABASE__TIMEOUT=30)
    lock(lockers[0], "job-0")
    ahead = fire(lambda: fail(web, tokens[0]))
    wait_until(lambda: _writer_waiting(db), 10, "the writer blocked on job-0")
    queued = fire(*[lambda t=t: fail(web, t) for t in tokens[1:]])
    time.sleep(QUEUED)
    assert recorded(db) == {}                   # nothing written while the writer waits
    lockers[0].rollback()
    assert ahead() == [200] and queued() == [200] * 10
    assert recorded(db) == {f"push://job-{i}": 1 for i in range(11)}
    # the ten that queued were written by one transaction: their rows carry its id
    assert scalar(db, "SELECT count(DISTINCT r.xmin::text) FROM task_result r JOIN url u ON u.id = r.url_id"
                      " WHERE u.url <> 'push://job-0'") == 1


def _two_queued_behind_job0(dsn, db, listener, lockers):  # noqa: F811
    """job-0's ping holds the writer (lockers[0]); job-1's and job-2's queue into the next batch,
    which, job-0 let go, waits on job-1 (lockers[1]). Returns (tokens, web, the batch's answers)."""
    tokens = add_pushes(dsn, 3)
    web = listener(SITEWATCH_DATABASE__TIMEOUT=30)
    lock(lockers[0], "job-0")
    lock(lockers[1], "job-1")
    first = fire(lambda: fail(web, tokens[0]))
    wait_until(lambda: _writer_waiting(db), 10, "the writer blocked on job-0")
    batch = fire(*[lambda t=t: web.client.post(f"/ping/{t}/fail") for t in tokens[1:]])
    time.sleep(QUEUED)
    lockers[0].rollback()
    assert first() == [200]
    return tokens, web, batch


def test_a_batch_that_fails_answers_none_of_its_pings_200_and_records_none(dsn, db, listener, lockers):  # noqa: F811
    tokens, web, batch = _two_queued_behind_job0(dsn, db, listener, lockers)
    pid = wait_until(lambda: _writer_waiting(db), 10, "the writer blocked on job-1")
    query(db, "SELECT pg_terminate_backend(%s)", (pid,))       # the connection dies mid-batch
    answers = batch()
    assert [a.status_code for a in answers] == [503, 503], answers
    lockers[1].rollback()
    assert recorded(db) == {"push://job-0": 1}          # neither ping of the failed batch was written
    # the listener connects again: the jobs' retries are recorded
    assert [fail(web, t) for t in tokens[1:]] == [200, 200]
    assert recorded(db) == {f"push://job-{i}": 1 for i in range(3)}


def test_a_batch_rolled_back_by_a_cancel_is_written_again_ping_by_ping(dsn, db, listener, lockers):  # noqa: F811
    _, _, batch = _two_queued_behind_job0(dsn, db, listener, lockers)
    pid = wait_until(lambda: _writer_waiting(db), 10, "the writer blocked on job-1")
    query(db, "SELECT pg_cancel_backend(%s)", (pid,))          # a transient error: not the connection's
    # written again alone: job-1's ping waits for its row again, then both are written, once each
    wait_until(lambda: _writer_waiting(db), 10, "the writer blocked on job-1 again")
    lockers[1].rollback()
    assert [a.status_code for a in batch()] == [200, 200]
    assert recorded(db) == {f"push://job-{i}": 1 for i in range(3)}


def test_the_ping_statement_is_prepared_once_per_session_and_survives_a_rollback(dsn, db):
    """Pings are written by a prepared statement (pushstore._ping_statement): one PREPARE per
    session, kept across a rolled-back batch, and made again on a new connection."""
    from sitewatch.check import push
    from sitewatch.db import pushstore
    token = add_pushes(dsn, 1)[0]
    ping = pushstore.Ping(push.token_hash(token), "success", None, None, None)
    # The first session: a batch rolled back, then the same ping written; the second session:
    # the slot's success is in already, so its ping records nothing (and needs the statement too).
    for recorded in ([(True, True), (True, True)], [(True, False)]):
        conn = psycopg2.connect(dsn)
        try:
            for number, answer in enumerate(recorded, 1):
                assert pushstore.ping_many(conn, [ping], "test") == [answer]
                if number < len(recorded):
                    conn.rollback()
            conn.commit()
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM pg_prepared_statements WHERE name = 'sitewatch_ping'")
                assert cur.fetchone()[0] == 1
                cur.execute("SELECT count(*) FROM task_result r JOIN url u ON u.id = r.url_id "
                            "WHERE u.url = 'push://job-0' AND r.ok")
                assert cur.fetchone()[0] == 1          # one slot, recorded once
        finally:
            conn.close()
