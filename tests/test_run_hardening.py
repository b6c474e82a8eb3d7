"""`sitewatch run` under the conditions the run-loop review found (issue 13 part A) and under
the load adaptive concurrency is for (issue 10): the real command as a subprocess, a real
PostgreSQL (a server this module owns when it must stop it), real sockets on 127.0.0.1.
"""

import os
import signal
import subprocess
import sys
import time

import psutil
import psycopg2

import tests.test_faults
import tests.test_run
from tests.test_run import group_processes, import_urls, query, scalar, wait_until

# Fixtures shared with the acceptance tests.
sitewatch, server = tests.test_run.sitewatch, tests.test_run.server
runs = tests.test_faults.runs      # owned_pg and owned_dsn come from conftest.py


def consumer_pid(run) -> int:
    return run.wait_for("consumer started")[-1]["pid"]


# --- A2: open-file limits -------------------------------------------------------------------


def test_soft_open_file_limit_is_raised_to_the_hard_limit_for_every_child(sitewatch, server):
    run = sitewatch(nofile=(256, 4096), env={"SITEWATCH_CONSUMER__CONCURRENCY": 3000})
    run.wait_started()
    for proc in psutil.Process(run.pid).children():
        assert proc.rlimit(psutil.RLIMIT_NOFILE) == (4096, 4096), proc.cmdline()


def test_a_ceiling_that_cannot_fit_the_open_file_limit_is_refused_with_one_line(sitewatch, db):
    run = sitewatch(nofile=(512, 512), env={"SITEWATCH_CONSUMER__CONCURRENCY": 1000})
    code = run.proc.wait(20)
    lines = run.text().splitlines()
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("sitewatch: error: consumer.concurrency: 1000 (from env "
                                                   "SITEWATCH_CONSUMER__CONCURRENCY) needs about"), lines
    assert "limit is 512" in lines[0] and "at most" in lines[0]
    assert not group_processes(run.pid)
    assert scalar(db, "SELECT count(*) FROM url") == 0


def test_the_default_ceiling_is_lowered_to_fit_a_low_hard_limit_with_a_warning(sitewatch, server):
    run = sitewatch(nofile=(1024, 1024), env={"SITEWATCH_CONSUMER__CONCURRENCY": None})
    started = run.wait_started()[0]
    [warning] = run.events("open-file limit too low for the default concurrency ceiling: lowered")
    assert warning["open_files_limit"] == 1024 and warning["concurrency"] == started["concurrency"] < 1024 - 64


def _probe_error_kind_without_descriptors(url: str) -> str:
    """The error_kind of a check run with no file descriptor left (in a subprocess)."""
    code = ("import resource, os, sys\n"
            "from sitewatch.check import probe\n"
            "t = probe.target_for({'url': sys.argv[1], 'regex': None, 'timeout': 2.0, 'method': 'GET',"
            " 'expected_status': '200-399', 'max_redirects': 5, 'verify_tls': True}, 1 << 20)\n"
            "probe.check(t)\n"
            "n = os.dup(0); os.close(n)  # the lowest free descriptor: none below it is free\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (n, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))\n"
            "print(probe.check(t).error_kind)\n")
    done = subprocess.run([sys.executable, "-c", code, url], capture_output=True, text=True, timeout=30)
    return done.stdout.strip() or done.stderr[-2000:]


def test_running_out_of_descriptors_is_never_recorded_as_the_site_down(sitewatch, cli, db, server):
    # The check itself: EMFILE is the monitor's failure, never the site's (was a skip: it passed
    # exactly when this regressed).
    assert _probe_error_kind_without_descriptors(server.url("/ok")) == "monitor"
    run = sitewatch(env={"SITEWATCH_SUPERVISOR__SUMMARY_INTERVAL": 1})
    pid = consumer_pid(run)
    import_urls(cli, [{"url": server.url(f"/ok?fd={i}"), "period": 1} for i in range(5)])
    wait_until(lambda: scalar(db, "SELECT count(*) FROM task_result") >= 5, 10, "first results")
    consumer = psutil.Process(pid)
    hard = consumer.rlimit(psutil.RLIMIT_NOFILE)[1]
    # The lowest free descriptor number as the limit: no descriptor left for a check (a count of
    # open ones would leave the holes below it usable).
    open_fds = {int(fd) for fd in os.listdir(f"/proc/{pid}/fd")}
    lowest_free = min(set(range(len(open_fds) + 1)) - open_fds)
    consumer.rlimit(psutil.RLIMIT_NOFILE, (lowest_free, hard))
    try:
        run.wait_for("monitor failure: checks could not run (out of file descriptors or threads?); "
                     "tasks handed back, not recorded as site failures", timeout=10)
        time.sleep(2)
    finally:
        consumer.rlimit(psutil.RLIMIT_NOFILE, (hard, hard))
    before = scalar(db, "SELECT count(*) FROM task_result WHERE ok")
    wait_until(lambda: scalar(db, "SELECT count(*) FROM task_result WHERE ok") >= before + 5, 10,
               "checking resumed")
    assert query(db, "SELECT error_kind, error FROM task_result WHERE NOT ok") == []
    # Counted in the summary once the consumer's next stats message (every 5 s) arrives.
    wait_until(lambda: sum(line.get("monitor_failures", 0) for line in run.events("summary")) >= 1, 15,
               "monitor_failures in the summary line")


# --- A6: stopping, orphans, reloads -------------------------------------------------------------


def test_orphaned_consumer_with_unwritten_results_exits_while_the_database_is_down(
        owned_pg, owned_dsn, runs, cli, server, tmp_path):
    from tests.conftest import cli_for
    grace = 3
    owned_cli = cli_for(tmp_path, owned_dsn)
    run = runs(owned_dsn, env={"SITEWATCH_SUPERVISOR__GRACE_PERIOD": grace})
    run.wait_started()
    import_urls(owned_cli, [{"url": server.url(f"/slow/2?orphan={i}"), "period": 1, "timeout": 10}
                            for i in range(3)])
    watcher = psycopg2.connect(owned_dsn)
    watcher.autocommit = True
    try:
        wait_until(lambda: scalar(watcher, "SELECT count(*) FROM task WHERE status = 1") == 3, 10,
                   "three checks in flight")
    finally:
        watcher.close()
    owned_pg.stop()                                  # the checks finish while it is down
    try:
        os.kill(run.pid, signal.SIGKILL)             # and nobody is left to kill the children
        run.proc.wait(5)
        # (The message names no command line: a child already a zombie has none to read.)
        wait_until(lambda: not group_processes(run.pid), grace + 15, f"the orphans of run {run.pid} to exit")
    finally:
        owned_pg.start()
    [gave_up] = run.events("stopping without writing results: database unavailable")
    assert gave_up["unwritten_results"] + gave_up["running"] >= 1


def test_a_reload_never_turns_a_slow_healthy_check_into_lost(sitewatch, cli, db, server):
    # One attempt allowed: a check cut short by a reload must not use it up.
    grace = 2
    run = sitewatch(env={"SITEWATCH_SUPERVISOR__GRACE_PERIOD": grace, "SITEWATCH_CONSUMER__MAX_ATTEMPTS": 1})
    run.wait_started()
    slow = server.url("/slow/4")
    import_urls(cli, [{"url": slow, "period": 60, "timeout": 8}])
    query(db, "UPDATE url SET next_check_at = now() RETURNING id")
    wait_until(lambda: scalar(db, "SELECT count(*) FROM task WHERE status = 1") == 1, 10, "the check in flight")
    time.sleep(0.5)
    run.signal(signal.SIGHUP)
    wait_until(lambda: scalar(db, "SELECT count(*) FROM task_result") == 1, 20, "the slot recorded")
    assert query(db, "SELECT ok, error_kind, attempt FROM task_result") == [(True, None, 1)]


# --- issue 10: adaptive concurrency ---------------------------------------------------------------


def test_the_pool_grows_past_its_start_while_hanging_checks_hold_threads(sitewatch, cli, db, server):
    # 150 checks hang until their 10 s timeout; the pool starts at 100 threads: without growing,
    # the fast URLs would wait for hanging checks to time out.
    # Threads are the urllib3 engine's (the curl engine runs every check on one loop thread).
    run = sitewatch(env={"SITEWATCH_CONSUMER__CONCURRENCY": 400, "SITEWATCH_SUPERVISOR__SUMMARY_INTERVAL": 1,
                         "SITEWATCH_CHECK__ENGINE": "urllib3"})
    run.wait_started()
    import_urls(cli, [{"url": server.url(f"/hang?grow={i}"), "period": 60, "timeout": 10} for i in range(150)])
    query(db, "UPDATE url SET next_check_at = now() RETURNING id")
    wait_until(lambda: scalar(db, "SELECT count(*) FROM task WHERE status = 1") >= 150, 10,
               "every hanging check claimed")
    import_urls(cli, [{"url": server.url(f"/ok?fast={i}"), "period": 1} for i in range(5)])
    wait_until(lambda: scalar(db, "SELECT count(*) FROM task_result WHERE ok") >= 15, 6,
               "fast URLs checked while 150 checks hang")
    lag = scalar(db, "SELECT max(extract(epoch FROM started_at - scheduled_at)) FROM task_result WHERE ok")
    assert lag < 5.0, lag     # waiting for the hanging checks would take their 10 s timeout
    # The pool size reaches the summary with the consumer's next stats message (every 5 s).
    wait_until(lambda: max([line["check_threads"] for line in run.events("summary")] or [0]) >= 150, 12,
               "a summary line with the grown pool")
    assert not any(line["consumers_at_ceiling"] for line in run.events("summary"))


def test_a_consumer_at_its_ceiling_says_so_in_the_summary_and_the_log(sitewatch, cli, db, server):
    run = sitewatch(env={"SITEWATCH_CONSUMER__CONCURRENCY": 20, "SITEWATCH_SUPERVISOR__SUMMARY_INTERVAL": 1})
    run.wait_started()
    import_urls(cli, [{"url": server.url(f"/hang?full={i}"), "period": 60, "timeout": 10} for i in range(40)])
    query(db, "UPDATE url SET next_check_at = now() RETURNING id")
    [warning] = run.wait_for("consumer at its concurrency ceiling with tasks waiting: add a host or raise "
                             "consumer.concurrency", timeout=10)
    assert warning["ceiling"] == 20 and warning["role"] == "consumer-1"
    wait_until(lambda: any(line["consumers_at_ceiling"] == ["consumer-1"] for line in run.events("summary")), 8,
               "a summary naming the consumer at its ceiling")
    assert scalar(db, "SELECT count(*) FROM task WHERE status = 1") == 20


def test_a_deadlocked_result_write_is_retried_not_lost(sitewatch, cli, db, server):
    """A result write that loses a lock race (deadlock, lock timeout) keeps its results and
    retries, instead of crashing the consumer with them."""
    with db.cursor() as cur:
        # Not transactional: the first two writes fail, whatever rolls back. The consumer's only:
        # the producer inserts into task_result too (push monitors' missed slots, every loop).
        cur.execute("CREATE SEQUENCE write_attempts")
        cur.execute("""CREATE FUNCTION fail_twice() RETURNS trigger LANGUAGE plpgsql AS $$
                       BEGIN
                           IF current_setting('application_name') LIKE 'sitewatch consumer%'
                              AND nextval('write_attempts') <= 2 THEN
                               RAISE EXCEPTION 'deadlock detected (test)' USING ERRCODE = '40P01';
                           END IF;
                           RETURN NEW;
                       END $$""")
        cur.execute("CREATE TRIGGER fail_twice BEFORE INSERT ON task_result FOR EACH STATEMENT "
                    "EXECUTE FUNCTION fail_twice()")
    run = sitewatch(env={"SITEWATCH_CONSUMER__PROCESSES": 1})
    run.wait_started()
    import_urls(cli, [{"url": server.url(f"/ok?deadlock={i}"), "period": 60} for i in range(3)])
    query(db, "UPDATE url SET next_check_at = now() RETURNING id")
    wait_until(lambda: scalar(db, "SELECT count(*) FROM task_result") == 3, 20, "the results written after retries")
    retries = run.events("database statement failed, results kept, retrying")
    assert len(retries) == 2 and all(r["pgcode"] == "40P01" for r in retries), retries
    assert not run.events("crashed") and not run.events("child died, restarting")
    assert scalar(db, "SELECT count(*) FROM task") == 0


# --- issue 25 §4.10 and §4.2: check threads the OS refuses; unstarted checks handed back on stop


def test_refused_check_threads_hold_fewer_checks_and_a_stop_hands_back_the_unstarted_ones(sitewatch, db, server):
    """The OS starts no more than 2 check threads (tests/faultinject): the consumer says so once
    it cannot start a third, goes on with the 2 it has, and nothing is recorded as the site's
    failure. Stopped then, it hands back the checks no thread has started, their attempt not
    counted, and records the 2 running ones."""
    run = sitewatch(env={"PYTHONPATH": tests.test_run.FAULTS, "SWTEST_CHECK_THREADS": 2,
                         "SITEWATCH_CHECK__ENGINE": "urllib3"})   # the engine with a thread per check
    run.wait_started()
    # By SQL, not `url import` (which puts each first slot at random in the period): 8 due now.
    query(db, "INSERT INTO url (url, period, timeout, next_check_at) SELECT %s || '?n=' || n, 60, 10, now()"
              " FROM generate_series(1, 8) n RETURNING id", (server.url("/slow/3"),))
    refused = run.wait_for("monitor failure: cannot start check threads; holding fewer checks", timeout=15)[0]
    assert refused["threads"] == 2, refused
    wait_until(lambda: scalar(db, "SELECT count(*) FROM task WHERE status = 1") == 8, 10, "all 8 claimed")
    code, _ = run.stop(timeout=20)
    assert code == 0
    stopping = run.events("stopping", role="consumer-1")[0]
    results = query(db, "SELECT ok, error_kind, attempt FROM task_result")
    assert stopping["handed_back"] >= 4 and stopping["handed_back"] + len(results) == 8, (stopping, results)
    assert set(results) == {(True, None, 1)}, results
    assert query(db, "SELECT DISTINCT status, attempts, lease_owner FROM task") == [(0, 0, None)]
    assert scalar(db, "SELECT count(*) FROM task") == stopping["handed_back"]


def test_a_run_whose_log_reader_went_away_keeps_checking_and_stops_on_sigterm(dsn, tmp_path, cli, db, server):
    # Its log pipe's reader gone (a closed terminal, a log shipper that died), every log line
    # meets EPIPE. The run must keep checking, and SIGTERM must still stop it and its children:
    # raised from the "stopping" log line, EPIPE once left the children unsignalled and the
    # supervisor waiting for them for ever.
    from tests.conftest import clean_env
    env = clean_env(tmp_path, DB_DSN=dsn, **tests.test_run.BASE_ENV)
    proc = subprocess.Popen([sys.executable, "-m", "sitewatch", "--log-format", "json", "run"], env=env,
                            cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        first = proc.stdout.readline()
        assert b"sitewatch running" in first, first
        proc.stdout.close()
        import_urls(cli, [{"url": server.url("/ok?reader=gone"), "period": 1}])
        wait_until(lambda: scalar(db, "SELECT count(*) FROM task_result WHERE ok") >= 3, 20,
                   "checking to go on with nobody reading the log")
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(30) == 0
        wait_until(lambda: not group_processes(proc.pid), 5, "every child to be gone")
    finally:
        if group_processes(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
