"""Push (heartbeat) monitors, push://NAME (issue 20): the real `sitewatch` command, the real web
listener over HTTP, and the real `sitewatch run` recording missed slots on a real PostgreSQL."""

import hashlib
import re
import socket
import time

import httpx
import pytest

from tests.conftest import count
from tests.conftest_web import WebServer
from tests.test_run import Run, query, scalar, wait_until
from tests.test_run import sitewatch as sitewatch  # noqa: F401  (fixture)

PING = re.compile(r"ping URL: /ping/([A-Za-z0-9_-]+)\n")
SHORT = {"MIN_PERIOD": "1"}          # periods of a second or two


def add_push(cli, name, *options) -> str:
    """`url add push://NAME ...`; returns the token it printed."""
    done = cli("url", "add", f"push://{name}", *options, env=SHORT)
    assert done.returncode == 0, done.stderr
    return PING.search(done.stdout).group(1)


def results(db, name) -> list[tuple]:
    """(scheduled_at, ok, error_kind, error, message) of push://NAME's results, by slot."""
    return query(db, "SELECT r.scheduled_at, r.ok, r.error_kind, r.error, r.message FROM task_result r"
                     " JOIN url u ON u.id = r.url_id WHERE u.url = %s ORDER BY r.scheduled_at",
                 (f"push://{name}",))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the command line -------------------------------------------------------------------------

def test_url_add_prints_a_ping_url_once_and_stores_only_the_tokens_hash(cli, db):
    done = cli("url", "add", "push://nightly-backup", "--period", "1d", "--grace", "2h")
    assert done.returncode == 0, done.stderr
    token = PING.search(done.stdout).group(1)
    assert len(token) >= 22                                  # at least 128 bits, base64url
    query(db, "SET bytea_output = 'escape'; SELECT 1")        # a token stored as bytes would read as text
    row = query(db, "SELECT u::text, period, grace, encode(push_token_hash, 'hex') FROM url u")
    assert len(row) == 1
    text, period, grace, stored = row[0]
    assert token not in text                                 # not in clear, in no column
    assert stored == hashlib.sha256(token.encode()).hexdigest()
    assert (period, grace) == (86400, 7200)

    # web.base_url set: the full address jobs reach
    done = cli("url", "add", "push://other", env={"SITEWATCH_WEB__BASE_URL": "https://status.example.com/sw/"})
    assert "ping URL: https://status.example.com/sw/ping/" in done.stdout

    # show-token: a new token, the old hash replaced
    done = cli("url", "show-token", "nightly-backup")
    assert done.returncode == 0, done.stderr
    new = PING.search(done.stdout).group(1)
    assert new != token
    assert scalar(db, "SELECT encode(push_token_hash, 'hex') FROM url WHERE url = 'push://nightly-backup'") \
        == hashlib.sha256(new.encode()).hexdigest()


def test_default_grace_is_a_fifth_of_the_period_within_a_minute_and_an_hour(cli, db):
    add_push(cli, "hourly", "--period", "1h")
    add_push(cli, "daily")
    add_push(cli, "often", "--period", "10")
    assert dict(query(db, "SELECT url, grace FROM url")) == {
        "push://hourly": 720, "push://daily": 3600, "push://often": 60}


@pytest.mark.parametrize("args", [
    ["url", "add", "push://bad name"],
    ["url", "add", "push://"],
    ["url", "add", "push://a/b"],
    ["url", "add", "push://x", "--regex", "ok"],
    ["url", "add", "push://x", "--header", "X-A: 1"],
    ["url", "add", "push://x", "--grace", "-5"],
    ["url", "add", "push://x", "--grace", "8d"],
    ["url", "add", "push://x", "--period", "32d"],
    ["url", "add", "https://example.com/", "--grace", "10"],
    ["url", "show-token", "nothing-here"],
    ["check", "push://x"],
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(cli, db, args):
    done = cli(*args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert len(done.stderr.strip().splitlines()) == 1 and "error" in done.stderr
    assert count(db, "url") == 0


def test_url_update_of_a_push_monitor_reslots_it_and_refuses_check_options(cli, db):
    add_push(cli, "job", "--period", "1h", "--grace", "10m")
    query(db, "UPDATE url SET push_slot = push_slot - interval '1 minute',"
              " push_started_at = now() RETURNING 1")    # a slot under way, a run open
    done = cli("url", "update", "push://job", "--name", "backup", "--failure-threshold", "4")
    assert done.returncode == 0, done.stderr
    kept = query(db, "SELECT name, failure_threshold, now() - push_slot, push_started_at IS NOT NULL FROM url")
    assert kept[0][:2] == ("backup", 4) and kept[0][2].total_seconds() >= 60 and kept[0][3]   # same slot
    done = cli("url", "update", "backup", "--grace", "5m")
    assert done.returncode == 0 and "re-slotted from now" in done.stdout, done.stderr
    grace, behind, open_run, deadline = query(db, "SELECT grace, now() - push_slot, push_started_at IS NOT NULL,"
                                                  " next_check_at - push_slot FROM url")[0]
    assert grace == 300 and behind.total_seconds() < 5 and not open_run and deadline.total_seconds() == 3900
    for args in (["--timeout", "3"], ["--url", "https://example.com/"], ["--assert", "status == 200"]):
        done = cli("url", "update", "backup", *args)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, (args, done.stderr)
    assert query(db, "SELECT url, grace, timeout, assertions FROM url") == [("push://job", 300, 10.0, [])]


# --- the web listener ------------------------------------------------------------------------

@pytest.fixture
def listener(dsn, tmp_path):
    started = []

    def start(**env):
        server = WebServer(tmp_path, dsn, env)
        started.append(server)
        return server
    yield start
    for server in started:
        server.stop()


def test_pings_record_results_and_refuse_unknown_tokens_and_big_bodies(cli, db, listener):
    token = add_push(cli, "job", "--period", "60", "--grace", "30")
    web = listener()
    assert web.client.head(f"/ping/{token}").status_code == 200             # the first slot's success
    assert results(db, "job")[0][1:] == (True, None, None, None)
    assert web.get(f"/ping/{token}").status_code == 200                     # same period: nothing more
    assert len(results(db, "job")) == 1

    for path in ("/ping/" + "A" * 32, "/ping/short", f"/ping/{token}/256", f"/ping/{token}/nope",
                 f"/ping/{token}/start/again"):
        answer = web.get(path)
        assert answer.status_code == 404 and answer.text == "not found\n", path
    assert web.client.put(f"/ping/{token}").status_code == 405

    # a failure is never dropped: it settles the next slot, its body kept (printable) as the message
    answer = web.client.post(f"/ping/{token}/fail", content=b"disk full\x1b[31m\nretrying")
    assert answer.status_code == 200
    _, ok, kind, error, message = results(db, "job")[1]
    assert (ok, kind) == (False, "failed")
    assert message == "disk full\\x1b[31m retrying"
    assert error == "the job reported failure: disk full\\x1b[31m retrying"

    assert web.client.post(f"/ping/{token}/3", content=b"x" * 10240).status_code == 200   # 10 KB: kept
    _, ok, kind, error, message = results(db, "job")[2]
    assert (ok, kind, message) == (False, "failed", "x" * 10240)
    assert error.startswith("the job exited with code 3: xxx") and len(error) == 300
    assert web.client.post(f"/ping/{token}/fail", content=b"x" * 10241).status_code == 413
    chunked = web.client.post(f"/ping/{token}/fail", content=iter([b"x" * 6000, b"x" * 6000]))  # no length
    assert chunked.status_code == 413
    assert len(results(db, "job")) == 3
    # pages and badges show it like any monitor
    url_id = scalar(db, "SELECT id FROM url")
    item = web.get(f"/api/v1/urls/{url_id}").json()
    assert item["url"] == "push://job" and item["last_error_kind"] == "failed"
    assert web.get(f"/badge/{url_id}/status.svg").status_code == 200


def test_each_token_has_its_own_rate_limit_and_pings_need_no_web_auth(cli, db, listener):
    first, second = add_push(cli, "one", "--period", "5", "--grace", "5"), add_push(cli, "two")
    web = listener(SITEWATCH_WEB__PING_RATE_LIMIT=3, SITEWATCH_WEB__AUTH="token:page-secret")
    assert web.get("/api/v1/summary").status_code == 401              # the pages are closed
    # each reaches the handler (none is answered by the 5 s response cache) and spends the budget
    assert [web.get(f"/ping/{first}/start").status_code for _ in range(3)] == [200] * 3
    refused = web.get(f"/ping/{first}")
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert scalar(db, "SELECT count(*) FROM task_result") == 0            # the refused success: not recorded
    assert web.get(f"/ping/{second}").status_code == 200


# --- the statements, on the database's clock ---------------------------------------------------

def test_the_producers_statements_record_a_missed_slot_once_and_never_enqueue_a_push_monitor(cli, db):
    from sitewatch.db import pushstore, store
    add_push(cli, "job", "--period", "60", "--grace", "30")
    query(db, "UPDATE url SET push_slot = push_slot - interval '95 seconds',"
              " next_check_at = next_check_at - interval '95 seconds' RETURNING 1")   # slot 0 is 5 s late
    assert store.enqueue_due(db, 100) == (0, 0, 0) and count(db, "task") == 0
    assert pushstore.record_missed(db, 100, "host:producer:1") == (1, 1)
    assert pushstore.record_missed(db, 100, "host:producer:2") == (0, 0)        # once
    (slot, ok, kind, error, _), = results(db, "job")
    assert (ok, kind) == (False, "missed") and error == "no ping within the period and grace (60 s + 30 s)"
    assert scalar(db, "SELECT push_slot - %s FROM url", (slot,)).total_seconds() == 60   # the next slot


def test_a_ping_after_an_outage_settles_its_own_slot_and_counts_the_skipped_ones(cli, db):
    from sitewatch.check import push
    from sitewatch.db import pushstore
    token = add_push(cli, "job", "--period", "60", "--grace", "30")
    first = scalar(db, "SELECT push_slot FROM url")
    # no producer ran for 4.5 periods: slots 0-3 are past their deadline, unrecorded
    query(db, "UPDATE url SET push_slot = push_slot - interval '270 seconds',"
              " next_check_at = next_check_at - interval '270 seconds' RETURNING 1")
    assert pushstore.ping(db, push.token_hash(token), push.SUCCESS, "host:web:1") == (True, True)
    (slot, ok, *_), = results(db, "job")
    assert ok and (first - slot).total_seconds() == 30             # slot 4, the one now falls in
    assert scalar(db, "SELECT skipped_slots FROM url") == 4
    assert pushstore.ping(db, push.token_hash("x" * 32), push.SUCCESS, "host:web:1") == (False, False)


# --- missed slots, end to end ----------------------------------------------------------------

def test_on_time_stopped_failing_and_overrunning_jobs(cli, db, sitewatch):   # noqa: F811
    """One `sitewatch run` (producer and web child): period 2 s, grace 1 s."""
    port = free_port()
    run = sitewatch(env={"SITEWATCH_WEB__LISTEN": f"127.0.0.1:{port}"})
    run.wait_for("producer started")
    web = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5)
    wait_until(lambda: _answers(web, "/ping/" + "A" * 32), 30, "the web child")
    # overruns: a run may last a second, its period is long (its slot is missed only at 11 s)
    overruns = add_push(cli, "overruns", "--period", "10", "--grace", "1")
    assert web.get(f"/ping/{overruns}/start").status_code == 200
    # steady last, so its first ping follows its creation at once (each `url add` takes a second
    # or two under CI's load, longer than a slot's window of 3 s)
    tokens = {name: add_push(cli, name, "--period", "2", "--grace", "1", "--failure-threshold", "2")
              for name in ("fails", "stops", "steady")}
    deadline = scalar(db, "SELECT now() + interval '7 seconds'")
    sent = 0
    while scalar(db, "SELECT now()") < deadline:
        assert web.get(f"/ping/{tokens['steady']}").status_code == 200         # every half period
        if sent < 2:
            assert web.get(f"/ping/{tokens['stops']}").status_code == 200     # then it stops
        sent += 1
        time.sleep(1.0)
    assert web.post(f"/ping/{tokens['fails']}/fail", content="backup: no space left").status_code == 200

    steady = results(db, "steady")
    assert len(steady) >= 3 and all(r[1] for r in steady), steady
    wait_until(lambda: [r for r in results(db, "stops") if r[2] == "missed"][1:], 10, "two missed slots")
    stops = results(db, "stops")
    kept = sum(1 for r in stops if r[1])       # its two pings settled one or two slots (the first may be late)
    assert 1 <= kept <= 2 and all(r[1] for r in stops[:kept]), stops
    assert all(r[2] == "missed" for r in stops[kept:]), stops
    assert "no ping within the period and grace (2 s + 1 s)" in stops[-1][3]
    overruns = results(db, "overruns")
    assert overruns[0][2] == "missed" and overruns[0][3].startswith("started at "), overruns
    # recorded at /start + grace, well before the slot's own deadline (its start + 11 s)
    assert scalar(db, "SELECT r.started_at - r.scheduled_at FROM task_result r JOIN url u ON u.id = r.url_id"
                      " WHERE u.url = 'push://overruns' ORDER BY r.scheduled_at LIMIT 1").total_seconds() < 8
    assert results(db, "fails")[-1][1:4] == (False, "failed", "the job reported failure: backup: no space left")
    # the alert path: the stopped job is down with an incident, the steady one up
    states = dict(query(db, "SELECT u.url, s.state FROM url_state s JOIN url u ON u.id = s.url_id"))
    assert states["push://stops"] == "down" and states["push://steady"] == "up", states
    assert scalar(db, "SELECT count(*) FROM incident i JOIN url u ON u.id = i.url_id"
                      " WHERE u.url = 'push://stops' AND i.ended_at IS NULL") == 1
    web.close()


def _answers(web, path) -> bool:
    try:
        return web.get(path).status_code in (200, 404)
    except httpx.HTTPError:
        return False


def test_two_runs_on_one_database_record_each_missed_slot_once(cli, db, sitewatch, tmp_path):  # noqa: F811
    """Two `sitewatch run` race for the same missed slots: every slot gets one result, none is
    skipped, and the alert state counts each once."""
    for name in ("a", "b", "c"):
        add_push(cli, name, "--period", "2", "--grace", "1", "--failure-threshold", "100")
    runs = [sitewatch(name=f"race{i}") for i in (1, 2)]
    for run in runs:
        run.wait_for("producer started")

    def missed_each():
        return query(db, "SELECT count(DISTINCT url_id), min(n) FROM (SELECT url_id, count(*) AS n"
                         " FROM task_result GROUP BY url_id) c")[0] in [(3, n) for n in range(3, 100)]
    wait_until(missed_each, 30, "3 missed slots each")
    for run in runs:
        run.begin_stop()
    for run in runs:
        run.stop_group()
    rows = query(db, "SELECT u.id, u.period, u.skipped_slots, s.fail_streak,"
                     " array_agg(extract(epoch FROM r.scheduled_at - u.created_at) ORDER BY r.scheduled_at),"
                     " array_agg(r.error_kind), array_agg(DISTINCT split_part(r.checked_by, ':', 3))"
                     " FROM url u JOIN url_state s ON s.url_id = u.id JOIN task_result r ON r.url_id = u.id"
                     " GROUP BY u.id, s.fail_streak")
    pids = set()
    for _, _, skipped, fail_streak, offsets, kinds, checked_by in rows:
        assert set(kinds) == {"missed"}
        # slot k at created_at + 2k (to the database clock's microsecond), each at most once; a
        # slot a producer starved of CPU passed over is counted as skipped (CI's load does that
        # to a 2 s period), never lost: recorded and skipped make up every slot up to the last
        slots = [round(float(o), 3) / 2.0 for o in offsets]
        assert all(k.is_integer() for k in slots) and slots == sorted(set(slots)), offsets
        assert len(slots) + skipped == int(slots[-1]) + 1, (offsets, skipped)
        assert fail_streak == len(offsets)                      # each applied to alerts once
        pids |= set(checked_by)
    assert pids <= {str(r.pid) for r in runs} | _producer_pids(runs)


def _producer_pids(runs: list[Run]) -> set[str]:
    return {str(line["pid"]) for run in runs for line in run.events("producer started")}
