"""Acceptance tests for `sitewatch run`: the real command in its own process group.

Each test starts `python -m sitewatch --log-format json run` as a subprocess (its
own session, so the supervisor and every child share one process group that the
teardown kills), points it at the test's fresh database and at the hostile HTTP
server on 127.0.0.1, and judges what a user would see: rows in task_result, the
exit code, the log lines, the processes left behind.

Timings are shortened through the environment (grace period, lease margin,
heartbeat timeout, backoff, poll interval): the whole file runs in about a
minute on a 2-core machine, no test over 20 s.
"""

import datetime
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import psutil
import psycopg2.extensions
import pytest

from sitewatch.db import schema
from tests.conftest import clean_env

# Short timings for tests; each test overrides what it is about.
BASE_ENV = {
    "MIN_PERIOD": 1,
    "HTTP_REQUEST_TIMEOUT": 5,
    "SITEWATCH_SUPERVISOR__GRACE_PERIOD": 5,
    "SITEWATCH_SUPERVISOR__HEARTBEAT_TIMEOUT": 10,
    "SITEWATCH_SUPERVISOR__RESTART_BACKOFF_MAX": 1,
    "SITEWATCH_CONSUMER__LEASE_MARGIN": 1,
    "SITEWATCH_CONSUMER__POLL_INTERVAL": 0.5,
    "SITEWATCH_CONSUMER__PROCESSES": 1,
    "SITEWATCH_CONSUMER__CONCURRENCY": 10,
    # Port 0: each run's /metrics on a port of its own (the log line "sitewatch running" says
    # which), so runs side by side never collide on the default 9464.
    "SITEWATCH_METRICS__LISTEN": "127.0.0.1:0",
}
START_TIMEOUT = 60      # seconds for `sitewatch run` to log a line: a bound against a hang, not a speed claim
# (under CI's load, coverage and four workers on two slow cores, a run once logged nothing for 20 s)
# Seconds a run gets to stop on SIGTERM at teardown before SIGKILL: stopping normally writes the
# coverage data of its processes; a check hanging until its timeout is not waited for past this.
TEARDOWN_GRACE = 8      # the supervisor's own grace period in these tests is 5 s (BASE_ENV)
ONE_SECOND = datetime.timedelta(seconds=1)


# --- helpers ----------------------------------------------------------------------


def wait_until(condition, timeout: float, what: str, interval: float = 0.2):
    """Poll `condition` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def gaps(slots: list) -> set:
    """The distinct differences between consecutive slots."""
    return {b - a for a, b in itertools.pairwise(slots)}


def group_processes(pgid: int) -> list[psutil.Process]:
    """Live (non-zombie) processes of a process group."""
    found = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            pass
    return found


def title(proc: psutil.Process) -> str:
    """The process title set with setproctitle (shown by ps), '' when the process is gone."""
    try:
        return " ".join(proc.cmdline()).strip()
    except psutil.Error:
        return ""


def query(conn, sql: str, params=None) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def scalar(conn, sql: str, params=None):
    return query(conn, sql, params)[0][0]


def results_by_url(conn) -> dict[str, list[tuple]]:
    """url -> [(scheduled_at, started_at, ok, error_kind, status_code, regex_matched, checked_by,
    attempt)] ordered by slot."""
    rows = query(conn, "SELECT u.url, r.scheduled_at, r.started_at, r.ok, r.error_kind, r.status_code,"
                       " r.regex_matched, r.checked_by, r.attempt"
                       " FROM task_result r JOIN url u ON u.id = r.url_id ORDER BY u.url, r.scheduled_at")
    out = {}
    for url, *rest in rows:
        out.setdefault(url, []).append(tuple(rest))
    return out


def gone(proc: psutil.Process) -> bool:
    """Exited (a zombie counts: its parent has not collected it yet)."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:      # reaped between the two calls
        return True


def import_urls(cli, entries: list[dict]) -> None:
    """`sitewatch url import -` with a YAML list (first slots spread across each period)."""
    lines = []
    for entry in entries:
        lines.append(f"- url: {json.dumps(entry['url'])}")
        for key, value in entry.items():
            if key != "url":
                lines.append(f"  {key}: {json.dumps(value)}")
    done = cli("url", "import", "-", input="\n".join(lines) + "\n", env={"MIN_PERIOD": "1"})
    assert done.returncode == 0, done.stderr


def pid_of_owner(owner: str) -> int:
    """checked_by / lease_owner is host:role:pid."""
    return int(owner.rsplit(":", 1)[1])


def _set_nofile(limits: tuple[int, int]):
    """A preexec_fn giving the command (soft, hard) open-file limits, as systemd or docker would."""
    import resource

    def apply():
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)
    return apply


class Run:
    """One `sitewatch run` process: its log (JSON lines, stdout and stderr) and its process group."""

    def __init__(self, tmp_path, dsn, *args, env=None, name="run", global_args=(), nofile=None):
        full_env = clean_env(tmp_path, DB_DSN=dsn, **BASE_ENV)
        for key, value in (env or {}).items():
            if value is None:
                full_env.pop(key, None)
            else:
                full_env[key] = str(value)
        self.log_path = tmp_path / f"{name}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sitewatch", "--log-format", "json", *global_args, "run", *args],
                env=full_env, cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=None if nofile is None else _set_nofile(nofile))
        self.pid = self.proc.pid   # also the process group id (start_new_session)

    def text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def lines(self) -> list[dict]:
        """Complete log lines; a line that is not JSON comes back as {"_raw": line}."""
        out = []
        for raw in self.text().splitlines(keepends=True):
            if not raw.endswith("\n"):
                break   # still being written
            try:
                line = json.loads(raw)
            except ValueError:
                line = {"_raw": raw.rstrip("\n")}
            out.append(line if isinstance(line, dict) else {"_raw": raw.rstrip("\n")})
        return out

    def events(self, event: str, **fields) -> list[dict]:
        return [line for line in self.lines() if line.get("event") == event
                and all(line.get(k) == v for k, v in fields.items())]

    def wait_for(self, event: str, timeout: float = START_TIMEOUT, count: int = 1, **fields) -> list[dict]:
        """Wait until `count` lines with this event (and fields) are logged; fail early if the run exits."""
        def seen():
            found = self.events(event, **fields)
            if len(found) >= count:
                return found
            if self.proc.poll() is not None:
                pytest.fail(f"sitewatch run exited ({self.proc.returncode}) before logging {event!r}:\n"
                            f"{self.text()[-3000:]}")
            return None
        return wait_until(seen, timeout, f"log line {event!r} {fields or ''} x{count}:\n"
                                         f"{self.text()[-3000:]}")

    def wait_started(self, consumers: int = 1) -> list[dict]:
        self.wait_for("producer started")
        return self.wait_for("consumer started", count=consumers)

    def consumer_pids(self) -> set[int]:
        return {line["pid"] for line in self.events("consumer started")}

    def child(self, name: str) -> psutil.Process:
        """The live child whose process title contains `name`, e.g. 'sitewatch: consumer 1'."""
        def find():
            for proc in psutil.Process(self.pid).children():
                if name in title(proc) and proc.status() != psutil.STATUS_ZOMBIE:
                    return proc
            return None
        return wait_until(find, 10, f"a child process titled {name!r}")

    def signal(self, signum) -> None:
        os.kill(self.pid, signum)

    def stop(self, timeout: float) -> tuple[int, float]:
        """SIGTERM, wait for the exit; returns (exit code, seconds taken)."""
        t0 = time.monotonic()
        self.signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        return code, time.monotonic() - t0

    def begin_stop(self, grace: float = TEARDOWN_GRACE) -> None:
        """SIGTERM to the supervisor (after SIGCONT to the group, for a process left stopped by
        SIGSTOP); stop_group() waits until `grace` seconds from now."""
        self._stop_deadline = time.monotonic() + grace
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGCONT)
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def stop_group(self, grace: float = TEARDOWN_GRACE) -> None:
        """End the run as an operator would: SIGTERM, then SIGKILL to whatever is left after the
        grace period. Processes that exit normally write their coverage data; killed ones cannot."""
        if getattr(self, "_stop_deadline", None) is None:
            self.begin_stop(grace)
        try:
            self.proc.wait(max(0.0, self._stop_deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        self.kill_group()

    def kill_group(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        # Children were re-parented; SIGKILL is immediate, but give the kernel a moment.
        deadline = time.monotonic() + 5
        while group_processes(self.pid) and time.monotonic() < deadline:
            time.sleep(0.1)


@pytest.fixture
def sitewatch(dsn, tmp_path):
    """Start `sitewatch run` processes; every process group is stopped at teardown (Run.stop_group:
    SIGTERM, SIGKILL after a grace period), whatever happened."""
    runs = []

    def start(*args, **kwargs) -> Run:
        kwargs.setdefault("name", f"run{len(runs) + 1}")
        run = Run(tmp_path, kwargs.pop("dsn", dsn), *args, **kwargs)
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.begin_stop()        # all at once: their grace periods run side by side
    for run in runs:
        run.stop_group()
    leftovers = [(p.pid, title(p)) for run in runs for p in group_processes(run.pid)]
    assert not leftovers, f"processes left behind: {leftovers}"


@pytest.fixture
def server(hostile_server):
    return hostile_server


# --- 1. results at each URL's period -----------------------------------------------


def test_results_arrive_for_every_url_at_its_period(sitewatch, cli, db, server):
    run = sitewatch(env={"SITEWATCH_SUPERVISOR__SUMMARY_INTERVAL": 2})
    run.wait_started()
    periods = {server.url("/ok/p1"): 1, server.url("/ok/p2"): 2, server.url("/ok/p3"): 3,
               server.url("/status/503"): 2}
    import_urls(cli, [{"url": url, "period": period} for url, period in periods.items()])
    # A fixed window on the database's clock: each URL's first slot falls within a period of the
    # import, so a window of W seconds holds W/P of its slots, +-1 (the phase), wherever the stop
    # lands after it (a loaded machine delays the SIGTERM; slots after t_stop are not counted).
    t_start = scalar(db, "SELECT now()")
    window = 7.0
    t_stop = t_start + datetime.timedelta(seconds=window)
    # Every slot of the window is recorded once each URL has a result for a slot after it: no
    # window slot is still queued or running when the stop comes. Results that stop early fail here.
    wait_until(lambda: scalar(db, "SELECT count(DISTINCT url_id) FROM task_result WHERE scheduled_at >= %s",
                              (t_stop,)) == len(periods), window + 15, "a result after the window for every URL")
    code, _ = run.stop(timeout=15)
    assert code == 0, run.text()[-2000:]

    results = results_by_url(db)
    assert set(results) == set(periods), f"URLs without results: {set(periods) - set(results)}"
    for url, period in periods.items():
        rows = results[url]
        slots = [r[0] for r in rows]
        in_window = [slot for slot in slots if t_start <= slot < t_stop]
        assert abs(len(in_window) - window / period) <= 1, \
            f"{url} (period {period}): {len(in_window)} slots in a window of {window:g} s"
        assert len(set(slots)) == len(slots), f"{url}: a slot recorded twice"
        # Fixed rate: slots are t0, t0+P, t0+2P...; a missed slot or a drift would show here.
        assert gaps(slots) == {datetime.timedelta(seconds=period)}, f"{url}: slot gaps {gaps(slots)}"
        for scheduled_at, started_at, ok, error_kind, status_code, *_ in rows:
            # Margin for a loaded CI; the slot gaps above catch a check a period late.
            assert started_at - scheduled_at < datetime.timedelta(seconds=5), f"{url}: checked late"
            if "/status/503" in url:
                assert (ok, error_kind, status_code) == (False, "status", 503)
            else:
                assert (ok, error_kind, status_code) == (True, None, 200)

    listing = cli("url", "list")
    assert listing.returncode == 0, listing.stderr
    states = {}
    for line in listing.stdout.splitlines():
        match = re.match(r"(\S+)\s.*\b(UP|DOWN)\b", line)
        if match:
            states[match.group(1)] = match.group(2)
    assert states == {url: "DOWN" if "503" in url else "UP" for url in periods}, listing.stdout

    # The summary lines add up to what was recorded (the final one comes with 'stopped').
    summaries = run.events("summary") + run.events("stopped")
    assert len(summaries) >= 3
    assert sum(x["checks"] for x in summaries) == scalar(db, "SELECT count(*) FROM task_result")
    assert sum(x["failed"] for x in summaries) == scalar(db, "SELECT count(*) FROM task_result WHERE NOT ok")
    assert all(x["lag_p99_s"] is not None for x in run.events("summary") if x["checks"])


# --- 2. graceful stop ----------------------------------------------------------------


def test_sigterm_lets_in_flight_checks_finish_and_records_them(sitewatch, cli, db, server):
    grace = 8
    run = sitewatch(env={"SITEWATCH_SUPERVISOR__GRACE_PERIOD": grace})
    run.wait_started()
    import_urls(cli, [{"url": server.url(f"/slow/3?n={i}"), "period": 1} for i in range(3)])
    # All three checks running (each takes 3 s), one second into them.
    wait_until(lambda: scalar(db, "SELECT count(*) FROM task WHERE status = 1") == 3, 10,
               "three checks in flight")
    time.sleep(1)
    in_flight = set(query(db, "SELECT url_id, scheduled_at FROM task WHERE status = 1"))
    assert len(in_flight) == 3

    code, took = run.stop(timeout=grace + 10)
    assert code == 0, run.text()[-2000:]
    assert took < grace - 2, f"took {took:.1f} s to stop: it should stop once the checks are done"

    recorded = {(url_id, slot): (ok, ms) for url_id, slot, ok, ms in
                query(db, "SELECT url_id, scheduled_at, ok, response_time_ms FROM task_result")}
    for slot in in_flight:
        assert slot in recorded, f"in-flight slot {slot} was not recorded"
        ok, ms = recorded[slot]
        assert ok and ms >= 2500, f"slot {slot} recorded as ok={ok}, {ms} ms: the check did not finish"
    # Nothing is left leased: what remains was never started (status 0), and is claimable at once.
    assert query(db, "SELECT id, status FROM task WHERE status <> 0") == []
    assert run.events("stopping", role="consumer-1", running=3)
    assert run.events("stopping: finishing in-flight checks", role="supervisor")
    assert run.events("stopped", role="supervisor")
    wait_until(lambda: not group_processes(run.pid), 3, "every child to be gone")


def test_second_sigint_stops_at_once(sitewatch, cli, db, server):
    run = sitewatch(env={"SITEWATCH_SUPERVISOR__GRACE_PERIOD": 60})
    run.wait_started()
    import_urls(cli, [{"url": server.url(f"/hang?n={i}"), "period": 1, "timeout": 60} for i in range(2)])
    wait_until(lambda: scalar(db, "SELECT count(*) FROM task WHERE status = 1") == 2, 10,
               "two hanging checks in flight")

    run.signal(signal.SIGINT)
    run.wait_for("stopping: finishing in-flight checks", timeout=5)
    time.sleep(1)
    assert run.proc.poll() is None, "the first SIGINT must wait for in-flight checks (grace 60 s)"

    t0 = time.monotonic()
    run.signal(signal.SIGINT)
    code = run.proc.wait(10)
    assert time.monotonic() - t0 < 20, "the second SIGINT did not stop at once"     # grace is 60 s
    assert code in (0, 130), run.text()[-2000:]
    assert run.events("second SIGINT: stopping at once")
    wait_until(lambda: not group_processes(run.pid), 3, "every child to be gone")


# --- 3. kill -9 of a consumer ---------------------------------------------------------


def test_killed_consumer_is_restarted_and_its_leased_slots_are_checked_again(sitewatch, cli, db, server):
    # Lease = URL timeout (6) + lease margin (1) = 7 s.
    run = sitewatch("--concurrency", "5", env={"SITEWATCH_SUPERVISOR__STABLE_AFTER": 5})
    run.wait_started()
    import_urls(cli, [{"url": server.url(f"/slow/4?n={i}"), "period": 5, "timeout": 6} for i in range(3)])
    wait_until(lambda: scalar(db, "SELECT count(*) FROM task WHERE status = 1") == 3, 10,
               "three slow checks in flight")
    leased = query(db, "SELECT url_id, scheduled_at, lease_owner FROM task WHERE status = 1")
    victim = run.child("sitewatch: consumer 1")
    assert {pid_of_owner(owner) for _, _, owner in leased} == {victim.pid}

    victim.kill()
    died = run.wait_for("child died, restarting", role="consumer-1", timeout=5)[0]
    assert died["exit_code"] == -signal.SIGKILL
    started = run.wait_for("consumer started", count=2)
    new_pid = started[-1]["pid"]
    assert new_pid != victim.pid
    assert run.child("sitewatch: consumer 1").pid == new_pid

    slots = [(url_id, slot) for url_id, slot, _ in leased]

    def rechecked():
        rows = query(db, "SELECT url_id, scheduled_at, attempt, checked_by, ok FROM task_result"
                         " WHERE (url_id, scheduled_at) IN"
                         " (SELECT * FROM unnest(%s::bigint[], %s::timestamptz[]))",
                     ([u for u, _ in slots], [s for _, s in slots]))
        return rows if len(rows) == len(slots) else None
    rows = wait_until(rechecked, 25, "the dead consumer's slots to be checked again after lease expiry")
    for url_id, slot, attempt, checked_by, ok in rows:
        assert (attempt, pid_of_owner(checked_by), ok) == (2, new_pid, True), (url_id, slot, checked_by)
    assert scalar(db, "SELECT count(*) - count(DISTINCT (url_id, scheduled_at)) FROM task_result") == 0
    # Every slot enqueued so far has a result or is still a task; none was lost.
    assert scalar(db, "SELECT count(*) FROM task_result WHERE error_kind = 'lost'") == 0

    # The restart backoff: the replacement ran past supervisor.stable_after (5 s), so its death
    # starts the backoff again from 0.5 s; the next consumer dies at once, so its delay doubles.
    replacement = psutil.Process(new_pid)
    wait_until(lambda: time.time() >= replacement.create_time() + 6, 20, "the replacement to run 6 s")
    replacement.kill()
    again = run.wait_for("child died, restarting", role="consumer-1", count=2, timeout=5)[-1]
    assert (again["consecutive_failures"], again["restart_in_s"]) == (1, 0.5), again
    third = wait_until(lambda: next((p for p in psutil.Process(run.pid).children()
                                     if "consumer 1" in title(p) and p.pid != new_pid), None), 10,
                       "a third consumer")
    third.kill()
    quick = run.wait_for("child died, restarting", role="consumer-1", count=3, timeout=5)[-1]
    assert (quick["consecutive_failures"], quick["restart_in_s"]) == (2, 1.0), quick
    wait_until(lambda: {line["pid"] for line in run.events("consumer started")}
               - {victim.pid, new_pid, third.pid}, 20, "a fourth consumer")   # the third may die unheard
    code, _ = run.stop(timeout=15)
    assert code == 0


# --- 4. two supervisors on one database --------------------------------------------------


def test_two_supervisors_share_the_work_and_record_each_slot_once(sitewatch, cli, db, server):
    urls = [server.url(f"/ok/{i}") for i in range(20)]
    import_urls(cli, [{"url": url, "period": 1} for url in urls])
    first = sitewatch(name="host-a")
    second = sitewatch(name="host-b")
    first.wait_started()
    second.wait_started()
    t_start = scalar(db, "SELECT now()")
    time.sleep(6)
    t_stop = scalar(db, "SELECT now()")
    for run in (first, second):
        code, _ = run.stop(timeout=15)
        assert code == 0, run.text()[-2000:]

    assert scalar(db, "SELECT count(*) - count(DISTINCT (url_id, scheduled_at)) FROM task_result") == 0
    results = results_by_url(db)
    for url in urls:
        slots = [r[0] for r in results.get(url, []) if t_start <= r[0] <= t_stop - ONE_SECOND]
        # Each slot enqueued once and no slot skipped: a second producer must neither double the
        # work nor push the cursor on twice.
        assert len(slots) >= (t_stop - t_start).total_seconds() - 2.5, f"{url}: only {len(slots)} results"
        assert gaps(slots) == {ONE_SECOND}, f"{url}: slots {slots}"
    owners = {pid_of_owner(r[6]) for rows in results.values() for r in rows}
    assert owners & first.consumer_pids(), "no result came from the first supervisor's consumer"
    assert owners & second.consumer_pids(), "no result came from the second supervisor's consumer"
    assert owners <= first.consumer_pids() | second.consumer_pids()


# --- 5. a catastrophic-backtracking regex ---------------------------------------------------


def test_backtracking_regex_does_not_stall_checking(sitewatch, cli, db, server):
    bomb, normal = server.url("/regex-bomb"), server.url("/ok")
    import_urls(cli, [{"url": bomb, "period": 1, "regex": "(a+)+$"}, {"url": normal, "period": 1}])
    run = sitewatch("--concurrency", "2")
    run.wait_started()
    t_start = scalar(db, "SELECT now()")
    wait_until(lambda: all(len([r for r in rows if r[0] >= t_start]) >= 5
                           for rows in results_by_url(db).values()) and len(results_by_url(db)) == 2,
               15, "five results for each URL")
    results = results_by_url(db)
    for url in (bomb, normal):
        rows = [r for r in results[url] if r[0] >= t_start]
        slots = [r[0] for r in rows]
        assert gaps(slots) == {ONE_SECOND}, f"{url}: slots {slots}"
        # A stalled check would be late by seconds at every slot; the gaps above catch a skipped slot.
        assert all(r[1] - r[0] < datetime.timedelta(seconds=3) for r in rows), f"{url}: checked late"
    assert {(r[2], r[3], r[5]) for r in results[bomb]} == {(False, "regex", False)}
    assert {(r[2], r[3]) for r in results[normal]} == {(True, None)}


# --- 6. kill -9 of the supervisor ------------------------------------------------------------


def test_children_exit_when_the_supervisor_is_killed(sitewatch, cli, db, server):
    import_urls(cli, [{"url": server.url(f"/ok/{i}"), "period": 1} for i in range(3)])
    run = sitewatch()
    run.wait_started()
    wait_until(lambda: scalar(db, "SELECT count(*) FROM task_result") >= 3, 10, "results")
    children = psutil.Process(run.pid).children()
    assert len(children) >= 2

    os.kill(run.pid, signal.SIGKILL)
    run.proc.wait(5)
    wait_until(lambda: not group_processes(run.pid), 8,
               f"the children to exit on their own: {[title(p) for p in group_processes(run.pid)]}")
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in children)
    before = scalar(db, "SELECT count(*) FROM task_result")
    time.sleep(2.5)
    assert scalar(db, "SELECT count(*) FROM task_result") == before, "an orphan is still checking"
    # On Linux the children get SIGTERM when the supervisor dies (PR_SET_PDEATHSIG) and stop as
    # on any SIGTERM; the getppid() fallback has its own test below.
    assert run.events("consumer stopped"), "children did not stop cleanly"


_ORPHAN = """
import os, time
from sitewatch.run.child import ChildContext
r, w = os.pipe()
if os.fork() == 0:          # the child of a supervisor that dies; no PR_SET_PDEATHSIG was set
    ctx = ChildContext("consumer-1", None, "", None, None, os.getppid())
    before = ctx.should_stop()
    os.write(w, b"r")
    deadline = time.monotonic() + 10
    while not ctx.should_stop() and time.monotonic() < deadline:
        time.sleep(0.05)
    print("stop before:", before, "after:", ctx.stop_requested, flush=True)
    os._exit(0)
os.read(r, 1)
os._exit(0)                 # the supervisor dies; its child is re-parented
"""


def test_a_child_notices_its_supervisor_gone_without_the_death_signal():
    # The fallback where PR_SET_PDEATHSIG is unavailable: should_stop() sees getppid() change.
    done = subprocess.run([sys.executable, "-c", _ORPHAN], capture_output=True, text=True, timeout=30)
    lines = done.stdout.splitlines()
    assert lines[-1] == "stop before: False after: True", done
    assert "supervisor gone, stopping" in done.stdout, done


# --- 7. a silent child -----------------------------------------------------------------------


FAULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "faultinject")   # its sitecustomize


def test_silent_or_stuck_consumer_is_killed_and_restarted(sitewatch, cli, db, server):
    """A consumer stopped (SIGSTOP) is killed for its silence; so is one whose every check thread
    is stuck past its deadline + consumer.stuck_margin (a check that never returns, injected by
    tests/faultinject: the probe's deadline leaves no real way), which stops beating on purpose."""
    run = sitewatch("--concurrency", "1",      # one check thread: one stuck check is all of them
                    env={"SITEWATCH_SUPERVISOR__HEARTBEAT_TIMEOUT": 3, "SITEWATCH_CONSUMER__STUCK_MARGIN": 1,
                         "PYTHONPATH": FAULTS, "SWTEST_STUCK_CHECKS": "/ok/stuck",
                         # a check thread per check: the engine whose checks can be stuck (the
                         # curl engine's loop has libcurl's deadline; its death is test_transfers')
                         "SITEWATCH_CHECK__ENGINE": "urllib3"})
    run.wait_started()
    import_urls(cli, [{"url": server.url("/ok"), "period": 1}])
    wait_until(lambda: scalar(db, "SELECT count(*) FROM task_result") >= 1, 10, "a first result")
    victim = run.child("sitewatch: consumer 1")

    victim.suspend()   # SIGSTOP: alive, but no progress and no heartbeat
    silent = run.wait_for("child silent, killing it", role="consumer-1", timeout=30)[0]
    # After the 3 s timeout, not long after (the supervisor's own measure: no test-side delay in it).
    assert 3 <= silent["silent_s"] < 10, silent
    started = run.wait_for("consumer started", count=2, timeout=15)
    new_pid = started[-1]["pid"]
    assert new_pid != victim.pid
    wait_until(lambda: gone(victim), 5,
               "the stopped consumer to be gone")
    wait_until(lambda: scalar(db, "SELECT count(*) FROM task_result WHERE checked_by LIKE %s",
                              (f"%:{new_pid}",)) >= 1, 15, "results from the new consumer")
    assert not run.events("every check thread is stuck; no heartbeat")

    # Now a URL whose check never returns (timeout 1 s): once it is 1 s (the margin) past its
    # deadline the consumer stops beating, says why, and is killed and replaced.
    cli("url", "remove", server.url("/ok"))
    import_urls(cli, [{"url": server.url("/ok/stuck"), "period": 1, "timeout": 1}])
    stuck = run.wait_for("every check thread is stuck; no heartbeat", timeout=30)[0]
    assert stuck["stuck"] == 1 and stuck["pid"] == new_pid, stuck
    run.wait_for("child silent, killing it", role="consumer-1", count=2, timeout=30)
    third = run.wait_for("consumer started", count=3, timeout=15)[-1]["pid"]
    assert third not in (victim.pid, new_pid)
    code, _ = run.stop(timeout=15)
    assert code == 0


# --- 8. schema newer than this sitewatch ------------------------------------------------------


def _bump_schema(db) -> None:
    query(db, "INSERT INTO schema_version (version, name) VALUES (%s, 'from the future') RETURNING version",
          (schema.LATEST_VERSION + 1,))


def test_schema_too_new_refuses_to_run(sitewatch, db):
    _bump_schema(db)
    run = sitewatch()
    t0 = time.monotonic()
    code = run.proc.wait(60)        # room past the bound below, so a slow refusal fails the assertion
    took = time.monotonic() - t0
    assert code == 1
    assert took < 30, f"refused only after {took:.1f} s: retried?"     # about 1 s; slack for a loaded CI
    assert "newer" in run.text() and "upgrade sitewatch" in run.text(), run.text()
    assert not run.events("consumer started")


def test_schema_upgraded_under_a_running_sitewatch_stops_it_without_restart_storm(sitewatch, db):
    run = sitewatch()
    run.wait_started()
    _bump_schema(db)
    run.signal(signal.SIGHUP)   # children restart, reconnect, and find the newer schema
    t0 = time.monotonic()
    code = run.proc.wait(60)
    took = time.monotonic() - t0
    assert code == 1, run.text()[-2000:]
    assert took < 30, f"stopped only after {took:.1f} s"
    text = run.text()
    assert "newer than this sitewatch" in text, text[-2000:]
    assert len(run.events("consumer started")) <= 2, "restarted over and over"
    wait_until(lambda: not group_processes(run.pid), 3, "every child to be gone")


# --- 9. SIGHUP --------------------------------------------------------------------------------


def test_sighup_reloads_configuration_and_keeps_the_old_one_when_broken(sitewatch, cli, db, server, tmp_path):
    config = tmp_path / "sitewatch.yaml"
    config.write_text("consumer:\n  concurrency: 4\n")
    run = sitewatch(global_args=("--config", str(config)), env={"SITEWATCH_CONSUMER__CONCURRENCY": None})
    first = run.wait_started()[0]
    assert first["concurrency"] == 4
    import_urls(cli, [{"url": server.url("/ok"), "period": 1}])
    wait_until(lambda: scalar(db, "SELECT count(*) FROM task_result") >= 1, 10, "a first result")

    config.write_text("consumer:\n  concurrency: 7\n")
    run.signal(signal.SIGHUP)
    run.wait_for("SIGHUP: configuration reloaded, restarting children", timeout=5)
    second = run.wait_for("consumer started", count=2, timeout=15)[-1]
    assert second["concurrency"] == 7 and second["pid"] != first["pid"]
    run.wait_for("producer started", count=2, timeout=15)   # children start in any order
    wait_until(lambda: scalar(db, "SELECT count(*) FROM task_result WHERE checked_by LIKE %s",
                              (f"%:{second['pid']}",)) >= 2, 10, "results after the reload")

    config.write_text("consumer:\n  concurrency: [not, a, number\n")
    run.signal(signal.SIGHUP)
    error = run.wait_for("SIGHUP: configuration not reloaded, keeping the old one", timeout=5)[0]
    assert "sitewatch.yaml" in error["error"]
    n = scalar(db, "SELECT count(*) FROM task_result WHERE checked_by LIKE %s", (f"%:{second['pid']}",))
    wait_until(lambda: scalar(db, "SELECT count(*) FROM task_result WHERE checked_by LIKE %s",
                              (f"%:{second['pid']}",)) >= n + 2, 10, "results from the same consumer")
    assert run.proc.poll() is None
    assert len(run.events("consumer started")) == 2, "a broken config must not restart children"

    # A new log level applies to every process, the supervisor included.
    config.write_text("consumer:\n  concurrency: 7\nlog:\n  level: warning\n")
    run.signal(signal.SIGHUP)
    run.wait_for("SIGHUP: configuration reloaded, restarting children", count=2, timeout=5)
    n_lines = len(run.lines())
    old_children = {line["pid"] for line in run.lines()[:n_lines] if line["role"] != "supervisor"}
    wait_until(lambda: run.child("sitewatch: consumer 1").pid not in (first["pid"], second["pid"]), 10,
               "a third consumer")
    code, _ = run.stop(timeout=15)
    assert code == 0
    later = [line for line in run.lines()[n_lines:] if line["pid"] not in old_children]
    assert all(line.get("level") != "info" for line in later), later


def test_sighup_does_not_leave_checking_stalled_behind_a_hanging_check(sitewatch, cli, db, server):
    grace = 3
    run = sitewatch(env={"SITEWATCH_SUPERVISOR__GRACE_PERIOD": grace})
    old = run.wait_started()[0]
    hang, ok = server.url("/hang"), server.url("/ok")
    import_urls(cli, [{"url": hang, "period": 1, "timeout": 60}, {"url": ok, "period": 1}])
    wait_until(lambda: query(db, "SELECT t.status FROM task t JOIN url u ON u.id = t.url_id WHERE u.url = %s",
                             (hang,)) == [(1,)], 10, "the hanging check in flight")

    run.signal(signal.SIGHUP)
    new = run.wait_for("consumer started", count=2, timeout=grace + 5)[-1]
    # Had checking stalled behind the hanging check, the new consumer's first result would come
    # when the check gave up, 60 s on; half that bounds a loaded CI machine's slowness, not a
    # timing promise.
    wait_until(lambda: scalar(db, "SELECT count(*) FROM task_result r JOIN url u ON u.id = r.url_id"
                                  " WHERE u.url = %s AND r.checked_by LIKE %s", (ok, f"%:{new['pid']}")) >= 1,
               30, "results from the new consumer while the hanging check still hangs")
    assert scalar(db, "SELECT count(*) FROM task_result r JOIN url u ON u.id = r.url_id WHERE u.url = %s",
                  (hang,)) == 0, "the hanging check gave up before checking went on"
    # The old consumer had the grace period to finish; then it handed the hanging check back
    # (attempt not counted: a slow healthy check cut short by reloads never becomes `lost`) and
    # left by itself: no process is left behind.
    wait_until(lambda: not psutil.pid_exists(old["pid"]) or psutil.Process(old["pid"]).status() == "zombie",
               grace + 3, "the old consumer to be gone")
    lines = run.lines()
    handed = [i for i, line in enumerate(lines) if line.get("event") == "grace period ending: running checks "
              "handed back" and line.get("pid") == old["pid"] and line.get("count") == 1]
    assert handed
    # It hands the check back a second before the grace period ends and leaves by itself; on a
    # loaded machine (four test workers on two cores, coverage written at exit) that last second
    # may not be enough, and the supervisor's kill then comes after the hand-back, which is what
    # must not be lost. A kill before it would have taken the check with it.
    killed = [i for i, line in enumerate(lines) if line.get("event") == "grace period over, killing child"
              and line.get("pid") == old["pid"]]
    assert all(i > handed[0] for i in killed), (handed, killed)
    wait_until(lambda: query(db, "SELECT t.attempts, t.lease_owner LIKE %s FROM task t JOIN url u ON u.id = t.url_id"
                                 " WHERE u.url = %s", (f"%:{new['pid']}", hang)) == [(1, True)],
               5, "the hanging check taken over by the new consumer at attempt 1")
    code, _ = run.stop(timeout=grace + 10)
    assert code == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_sighup_shrinking_consumers_and_turning_web_off_retires_them_and_warns_of_restart_only_settings(
        sitewatch, cli, db, server, tmp_path):
    """Recovery path (issue 25 §4.9): a reload with fewer consumers and web.listen emptied retires
    consumer 2 and the web child for good; a changed metrics.listen and a changed database setting
    are named as needing a restart."""
    web_port, metrics_port, other_port = _free_port(), _free_port(), _free_port()
    config = tmp_path / "sitewatch.yaml"
    config.write_text(f"consumer:\n  processes: 2\nweb:\n  listen: 127.0.0.1:{web_port}\n"
                      f"metrics:\n  listen: 127.0.0.1:{metrics_port}\n")
    run = sitewatch(global_args=("--config", str(config)),
                    env={"SITEWATCH_WEB__LISTEN": None, "SITEWATCH_METRICS__LISTEN": None,
                         "SITEWATCH_CONSUMER__PROCESSES": None})
    run.wait_started(consumers=2)
    run.wait_for("web server listening", role="web")
    web = run.child("sitewatch: web")
    import_urls(cli, [{"url": server.url(f"/ok/shrink-{i}"), "period": 1} for i in range(4)])
    wait_until(lambda: scalar(db, "SELECT count(*) FROM task_result") >= 4, 10, "first results")

    # database.data_dir: a database setting that leaves this run's database alone (the embedded
    # server's directory, used only when no DSN is set; this run has one, DB_DSN).
    config.write_text(f"consumer:\n  processes: 1\nweb:\n  listen: ''\nmetrics:\n  listen: 127.0.0.1:{other_port}\n"
                      f"database:\n  data_dir: {tmp_path / 'another-data-dir'}\n")
    run.signal(signal.SIGHUP)
    run.wait_for("SIGHUP: metrics.listen changed; it takes effect on the next start", timeout=5)
    run.wait_for("SIGHUP: database settings changed; they take effect on the next start", timeout=5)
    run.wait_for("SIGHUP: configuration reloaded, restarting children", timeout=5)
    new = run.wait_for("consumer started", count=3, timeout=15)[-1]
    assert new["role"] == "consumer-1", new
    wait_until(lambda: gone(web), 15, "the web child to be gone")
    wait_until(lambda: not any("consumer 2" in title(p) or "sitewatch: web" in title(p)
                               for p in psutil.Process(run.pid).children() if not gone(p)),
               15, "consumer 2 and the web child retired")
    wait_until(lambda: scalar(db, "SELECT count(*) FROM task_result WHERE checked_by LIKE %s",
                              (f"%:{new['pid']}",)) >= 4, 15, "results from the one consumer left")
    assert len(run.events("consumer started")) == 3 and len(run.events("web server listening")) == 1
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", web_port)) != 0, "the web port still answers"
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
        assert response.status == 200                                      # the old address stays
    code, _ = run.stop(timeout=15)
    assert code == 0, run.text()[-2000:]


def test_a_retiring_child_that_does_not_stop_is_killed_after_the_grace_period(sitewatch, cli, db, server):
    """Recovery path (issue 25 §4.4): after SIGHUP the old consumer retires; one that cannot stop
    (SIGSTOP here: no exit, no heartbeat) is killed once the grace period is over, and the new
    consumer checks meanwhile."""
    grace = 3
    run = sitewatch(env={"SITEWATCH_SUPERVISOR__GRACE_PERIOD": grace,
                         "SITEWATCH_SUPERVISOR__HEARTBEAT_TIMEOUT": 60})    # not killed as silent first
    old = run.wait_started()[0]
    import_urls(cli, [{"url": server.url("/ok/retiring"), "period": 1}])
    wait_until(lambda: scalar(db, "SELECT count(*) FROM task_result") >= 1, 10, "a first result")
    victim = psutil.Process(old["pid"])
    victim.suspend()
    run.signal(signal.SIGHUP)
    new = run.wait_for("consumer started", count=2, timeout=15)[-1]
    killed = run.wait_for("grace period over, killing child", role="consumer-1", timeout=grace + 15)[0]
    assert killed["pid"] == old["pid"], killed
    reloaded = run.wait_for("SIGHUP: configuration reloaded, restarting children")[0]
    waited = (datetime.datetime.fromisoformat(killed["timestamp"])
              - datetime.datetime.fromisoformat(reloaded["timestamp"])).total_seconds()
    assert waited >= grace - 0.5, f"killed {waited:.1f} s after the reload, before its grace period ended"
    wait_until(lambda: gone(victim), 10,
               "the stopped consumer to be gone")
    wait_until(lambda: scalar(db, "SELECT count(*) FROM task_result WHERE checked_by LIKE %s",
                              (f"%:{new['pid']}",)) >= 1, 15, "results from the new consumer")
    assert not run.events("child died, restarting", role="consumer-1")     # retired, not a crash
    code, _ = run.stop(timeout=15)
    assert code == 0, run.text()[-2000:]


# --- 10. what runs where ------------------------------------------------------------------------


def test_startup_line_says_what_runs_where_and_every_line_names_role_and_pid(sitewatch, dsn, db, server):
    secret = "hunter2-not-logged"
    dsn_with_password = psycopg2.extensions.make_dsn(dsn, password=secret)   # trust auth ignores it
    run = sitewatch("--consumers", "2", "--concurrency", "3", dsn=dsn_with_password)
    run.wait_started(consumers=2)
    host = psycopg2.extensions.parse_dsn(dsn).get("host", "")
    line = run.wait_for("sitewatch running")[0]
    assert host in line["database"] and secret not in line["database"]
    assert (line["producer"], line["consumers"], line["concurrency"]) == (1, 2, 3)

    titles = sorted(title(p) for p in psutil.Process(run.pid).children())
    for expected in ("sitewatch: producer", "sitewatch: notifier", "sitewatch: consumer 1", "sitewatch: consumer 2"):
        assert any(t.startswith(expected) for t in titles), titles
    assert title(psutil.Process(run.pid)).startswith("sitewatch: supervisor")

    code, _ = run.stop(timeout=15)
    assert code == 0
    lines = run.lines()
    assert lines and all("_raw" not in line for line in lines), [x for x in lines if "_raw" in x]
    assert all(isinstance(x.get("role"), str) and isinstance(x.get("pid"), int) for x in lines)
    roles = {x["role"]: x["pid"] for x in lines if x.get("event", "").endswith("started")}
    assert set(roles) == {"producer", "maintenance", "notifier", "consumer-1", "consumer-2"}
    assert {x["pid"] for x in lines if x["role"] == "supervisor"} == {run.pid}
    for role, pid in roles.items():
        assert {x["pid"] for x in lines if x["role"] == role} == {pid}
    assert secret not in run.text()
