"""The web child with every connection of its pool held (issue 25 §4.5): a JSON 503 after
database.timeout, not a hang, and pages again once the connections come back.

Every statement of the web runs under statement_timeout = database.timeout, the same time a
request waits for a free connection, so a slow query alone frees its connection before a
waiting request gives up. The connections are held here the only way that outlasts it: their
four backends on the owned PostgreSQL are stopped (SIGSTOP) while they wait on a lock."""

import os
import signal
import threading

import psycopg2

from tests.conftest_web import wait_for


def _backends_waiting(dsn) -> list[int]:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT DISTINCT pid FROM pg_locks WHERE NOT granted AND pid <> pg_backend_pid()")
            return [pid for pid, in cur.fetchall()]
    finally:
        conn.close()


def test_a_web_child_with_its_pool_exhausted_answers_503_and_recovers(owned_pg, owned_dsn, web_factory, tmp_path):
    from sitewatch.web.pool import POOL_SIZE
    from tests.conftest import cli_for
    assert cli_for(tmp_path, owned_dsn)("db", "migrate").returncode == 0
    server = web_factory(owned_dsn, env={"SITEWATCH_DATABASE__TIMEOUT": 4})
    holder = psycopg2.connect(owned_dsn)
    stopped = []
    try:
        with holder.cursor() as cur:
            cur.execute("LOCK TABLE url IN ACCESS EXCLUSIVE MODE")
        # POOL_SIZE requests (distinct URLs: the response cache must not answer any) each take a
        # connection and wait on the lock.
        answers = {}
        threads = [threading.Thread(target=lambda n=n: answers.__setitem__(n, server.get(f"/api/v1/urls?limit={n}")))
                   for n in range(1, POOL_SIZE + 1)]
        for thread in threads:
            thread.start()
        waiting = wait_for(lambda: (lambda pids: pids if len(pids) == POOL_SIZE else None)(
            _backends_waiting(owned_pg.base_dsn)), timeout=3, interval=0.05)
        assert waiting and len(waiting) == POOL_SIZE, waiting
        for pid in waiting:
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
        holder.rollback()                       # the lock goes; the stopped backends cannot move

        busy = server.get("/api/v1/urls?limit=50")
        assert busy.status_code == 503, busy.text
        assert busy.json()["error"] == "all database connections of the web server are busy", busy.text
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        holder.close()
    for thread in threads:
        thread.join(30)
    # The held requests end one way or the other (their statement timed out while stopped, or not).
    assert sorted(answers) == list(range(1, POOL_SIZE + 1))
    assert {answers[n].status_code for n in answers} <= {200, 503}
    assert wait_for(lambda: server.get("/api/v1/urls?limit=51").status_code == 200, timeout=30)
    assert server.proc.poll() is None
