"""The maintenance job at scale (issue 18): its heavy work in many short statements that give
exactly the one-statement figures, its rests, and plans that hold on a fresh database."""

import datetime
import json
import threading
import time

import psycopg2
import pytest

from sitewatch.history import analyze, maintenance, pacing, rollup, summary
from sitewatch.history.pacing import Pace, time_slices, url_chunks
from tests.historydata import add_urls, assert_rollups_match_raw, ensure_past_partitions, insert_results
from tests.historydata import conn as conn  # noqa: F401  (fixture)

HOUR = datetime.timedelta(hours=1)
MINUTE = datetime.timedelta(minutes=1)
T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


class FakeClock:
    """Each statement 'takes' `took` seconds; rests are recorded, not slept."""

    def __init__(self, took: float):
        self.t, self.took, self.slept, self.reads = 0.0, took, [], 0

    def clock(self) -> float:
        self.reads += 1
        if self.reads % 2 == 0:          # read twice per statement: before, and after it took `took`
            self.t += self.took
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def test_pace_rests_in_proportion_and_sizes_chunks_to_the_target():
    fake = FakeClock(took=2.0)
    pace = Pace(duty=0.4, target_s=0.5, sleep=fake.sleep, clock=fake.clock)
    pace.call(lambda: None)
    assert fake.slept == [pytest.approx(3.0)]          # 2 s of work, then 1.5 times as long at rest
    assert pace.report() == {"statements": 1, "longest_statement_s": 2.0, "work_s": 2.0, "rest_s": 3.0,
                             "yield_s": 0.0}
    assert pace.resize(1000, took_s=2.0, smallest=200, largest=50_000) == 250      # 4x too long: a quarter
    assert pace.resize(1000, took_s=0.001, smallest=200, largest=50_000) == 4000   # grows at most 4x a step
    assert pace.resize(1000, took_s=10.0, smallest=200, largest=50_000) == 250     # shrinks at most 4x
    assert Pace(duty=1.0, sleep=fake.sleep, clock=fake.clock).call(lambda: 7) == 7
    assert len(fake.slept) == 1                        # duty 1: no rest


def test_the_job_waits_while_the_checks_are_behind_but_not_for_ever():
    fake = FakeClock(took=0.0)
    answers = iter([5.0, 2.0, 1.5, 0.2])            # seconds the oldest claimable task has waited
    pace = Pace(duty=1.0, sleep=fake.sleep, clock=fake.clock, behind=lambda: next(answers))
    pace.call(lambda: None)
    assert fake.slept == [pacing.YIELD_POLL_S] * 3 and pace.report()["yield_s"] == 3 * pacing.YIELD_POLL_S
    stuck = FakeClock(took=0.0)                       # the host never catches up: the job goes on
    pace = Pace(duty=1.0, sleep=stuck.sleep, clock=stuck.clock, behind=lambda: 60.0)
    pace.call(lambda: None)
    pace.call(lambda: None)
    assert sum(stuck.slept) == 2 * pacing.MAX_YIELD_S


def test_checks_behind_reads_the_oldest_claimable_task(dsn, conn):
    behind = maintenance.ChecksBehind(dsn, 5.0)
    try:
        assert behind() == 0.0                         # no task at all
        ids = add_urls(conn, 2)
        with conn.cursor() as cur:
            cur.execute("INSERT INTO task (url_id, scheduled_at, available_at) VALUES"
                        " (%s, now(), now() - interval '10 s'), (%s, now(), now() + interval '1 minute')",
                        (ids[0], ids[1]))        # one waiting 10 s, one leased (not claimable)
        conn.commit()
        assert 9.0 <= behind() < 60.0
    finally:
        behind.close()
    assert maintenance.ChecksBehind("postgresql://nobody@127.0.0.1:1/none", 1.0)() == 0.0   # never holds the job


def test_checks_behind_reads_a_due_url_the_producer_holds_back(dsn, conn):
    """While the consumers are a batch behind the producer enqueues nothing (run/producer.py):
    the wait is then in the due cursors, not in the queue, and the job must still see it."""
    behind = maintenance.ChecksBehind(dsn, 5.0)
    try:
        [uid] = add_urls(conn, 1)                      # due in an hour: not behind
        assert behind() == 0.0
        with conn.cursor() as cur:
            cur.execute("UPDATE url SET next_check_at = now() - interval '20 s' WHERE id = %s", (uid,))
        conn.commit()
        assert 19.0 <= behind() < 60.0
    finally:
        behind.close()


def test_url_chunks_cover_every_id_and_follow_the_statements_time(conn):
    ids = add_urls(conn, 30)
    with conn.cursor() as cur:
        cur.execute("DELETE FROM url WHERE id = ANY (%s)", (ids[10:15],))   # removed: in the ranges still
    conn.commit()
    fake = FakeClock(took=0.05)                        # ten times faster than the target: chunks grow
    pace = Pace(duty=1.0, target_s=0.5, sleep=fake.sleep, clock=fake.clock)
    with conn.cursor() as cur:
        chunks = []
        for lo, hi, chunk in url_chunks(cur, pace, first=2, smallest=1, largest=100):
            pace.call(lambda: None)
            chunks.append((lo, hi, chunk))
    conn.rollback()
    assert [len(c) for _, _, c in chunks] == [2, 8, 15]                  # 2, then x4, then what is left
    assert chunks[0][0] == 0 and chunks[-1][1] == 2**63 - 1
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:], strict=False))       # contiguous: every id in one
    assert sorted(i for _, _, c in chunks for i in c) == ids[:10] + ids[15:]
    assert all(lo <= i < hi for lo, hi, c in chunks for i in c)


def test_time_slices_start_from_the_urls_rate_and_cover_the_window(conn):
    add_urls(conn, 100)                                # 100 URLs every 60 s: 5,000 rows in 50 minutes
    fake = FakeClock(took=0.5)                         # on target: slices keep their size
    pace = Pace(duty=1.0, target_s=0.5, sleep=fake.sleep, clock=fake.clock)
    with conn.cursor() as cur:
        slices = []
        for a, b in time_slices(cur, T0, T0 + 6 * HOUR, pace, rows=5000):
            pace.call(lambda: None)
            slices.append((a, b))
    conn.rollback()
    assert slices[0] == (T0, T0 + 50 * MINUTE)
    assert slices[-1][1] == T0 + 6 * HOUR and all(x[1] == y[0] for x, y in zip(slices, slices[1:], strict=False))
    assert {b - a for a, b in slices[:-1]} == {50 * MINUTE}


def test_chunked_rollups_and_summary_equal_the_raw_rows(conn, monkeypatch):
    """Many slices and URL chunks (a target so small every chunk is the smallest) give exactly
    the figures recomputed from raw rows, and the summary equals a build in one chunk."""
    monkeypatch.setattr(pacing, "SLICE_ROWS", 100)     # the first slice a minute, not the window
    monkeypatch.setattr(pacing, "FIRST_CHUNK", 200)    # and the first chunk 200 URLs of 450
    ensure_past_partitions(conn, 2)
    ids = add_urls(conn, 450)
    with conn.cursor() as cur:
        cur.execute("SELECT date_trunc('hour', now(), 'UTC') - interval '3 hours'")
        start = cur.fetchone()[0]
    conn.commit()
    insert_results(conn, ids, start, start + 3 * HOUR, step_s=300)
    tiny = Pace(duty=1.0, target_s=1e-6)               # every slice a minute, every chunk 200 URLs
    with conn.cursor() as cur:
        written, deleted = rollup.recompute_hours(cur, start, start + 3 * HOUR, tiny)
        rollup.recompute_days(cur, start.replace(hour=0), (start + 3 * HOUR).replace(hour=0), tiny)
    conn.commit()
    assert (written, deleted) == (3 * 450, 0)
    assert tiny.statements >= 180 + 3 * 2              # 180 one-minute slices; 3 merges, 3 day chunks
    assert assert_rollups_match_raw(conn, "rollup_hour", "hour", start + 3 * HOUR) == 3 * 450

    def built(pace):
        with conn.cursor() as cur:
            cur.execute("DELETE FROM uptime_summary_state")
            cur.execute("UPDATE rollup_watermark SET done_until = %s WHERE level = 'hour'", (start + 3 * HOUR,))
        conn.commit()
        assert summary.refresh(conn, 0.0, pace=pace)["summary"] == "built"
        with conn.cursor() as cur:
            cur.execute("SELECT * FROM uptime_summary ORDER BY url_id")
            return cur.fetchall()
    chunked, whole = built(Pace(duty=1.0, target_s=1e-6)), built(Pace(duty=1.0, target_s=1e9))
    assert len(chunked) == 450 and chunked == whole


def _plan_nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", ()):
        yield from _plan_nodes(child)


def test_a_merge_reads_only_its_ranges_staging_partitions(conn, monkeypatch):
    """Issue 18: the staging table had one index, built after the slices in one statement the
    pace could not cut (5.3 s at 10 million raw rows). It is partitioned by URL ranges instead,
    and a merge (its new rows and its anti-join alike) must read only the partitions of its
    range, or every chunk would read the whole stage."""
    monkeypatch.setattr(rollup, "STAGE_URLS_PER_PARTITION", 100)
    add_urls(conn, 450)
    with conn.cursor() as cur:
        cur.execute("SELECT date_trunc('hour', now(), 'UTC') - interval '2 hours'")
        start = cur.fetchone()[0]
        partitions = rollup._create_stage(cur)
        assert len(partitions) == 5                              # 450 URLs at 100 a partition
        cur.execute("SELECT min(id) FROM url")
        lo = cur.fetchone()[0]
        cur.execute("EXPLAIN (FORMAT JSON) " + rollup.QUERIES["rollup_hours_merge"],
                    {"from": start, "to": start + HOUR, "lo": lo, "hi": lo + 50})
        plan = cur.fetchone()[0][0]["Plan"]
    conn.rollback()
    read = [n["Relation Name"] for n in _plan_nodes(plan) if n.get("Relation Name", "").startswith("rollup_stage")]
    assert read and set(read) == {"rollup_stage_0"}, read       # the fresh rows and the anti-join


def test_the_summary_addition_never_scans_the_summary_on_a_fresh_database(conn):
    """Issue 18: on a summary just built, with no statistics, the planner believed the table
    empty and the addition's anti-join became a nested loop over every row for every URL. The
    addition now finds each row by the primary key's own probe: no plan node reads the table."""
    ids = add_urls(conn, 50)
    with conn.cursor() as cur:
        cur.execute("INSERT INTO uptime_summary (url_id, ok_24h, failed_24h, ok_7d, failed_7d, ok_30d,"
                    " failed_30d, hist_from, cum_24h) SELECT id, 1, 0, 1, 0, 1, 0, 3, '{1}' FROM url")
        cur.execute("EXPLAIN (FORMAT JSON) " + rollup.QUERIES["summary_add"],
                    {"from": T0, "to": T0 + MINUTE, "lo": 0, "hi": 2**63 - 1})
        plan = cur.fetchone()[0]
    conn.rollback()
    plan = plan[0]["Plan"] if isinstance(plan, list) else json.loads(plan)[0]["Plan"]
    assert plan["Node Type"] == "ModifyTable" and plan["Conflict Resolution"] == "UPDATE"
    reads = [n for n in _plan_nodes(plan) if n.get("Relation Name") == "uptime_summary" and n is not plan]
    assert reads == [] and len(ids) == 50


def test_the_job_analyses_what_its_plans_rely_on(conn):
    """A fresh database's tables have no statistics (autovacuum may be off, and is late for a
    table filled in bulk): the job analyses them, and then a few minutes of raw rows are read
    through the BRIN index instead of a scan of the whole day."""
    ids = add_urls(conn, 500)
    with conn.cursor() as cur:
        cur.execute("SELECT date_trunc('day', now(), 'UTC'), now()")
        today, now = cur.fetchone()
    conn.commit()
    # Four hours of today's partition, and a five-minute slice of them. Early in the UTC day
    # the hours run past now (the plan is the point, not the clock): today's rows from
    # midnight to now made the slice a third of the partition at 00:16, and a scan was right.
    start = max(today, now - 4 * HOUR)
    insert_results(conn, ids, start, start + 4 * HOUR, step_s=60)
    at = min(max(now, today + 10 * MINUTE), start + 4 * HOUR)
    with conn.cursor() as cur:
        assert "url" in analyze.stale(cur, [])
    conn.rollback()
    report = maintenance.run_once(conn, _cfg())
    assert report["tables_analyzed"] >= 2
    with conn.cursor() as cur:
        assert analyze.stale(cur, []) == []
        cur.execute("SET max_parallel_workers_per_gather = 0")
        cur.execute("EXPLAIN (FORMAT JSON) " + rollup.QUERIES["rollup_stage_slice"].replace(
            "INSERT INTO rollup_stage", ""), {"from": at - 10 * MINUTE, "to": at - 5 * MINUTE})
        plan = cur.fetchone()[0][0]["Plan"]
    conn.rollback()
    scans = {n["Node Type"] for n in _plan_nodes(plan) if "Relation Name" in n or "Index Name" in n}
    assert "Seq Scan" not in scans, scans


def _cfg():
    from tests.historydata import cfg
    return cfg()


class _BeatCounter:
    """The little of a supervised child's context that Maintenance uses; heartbeat() records when."""
    role = "maintenance"

    def __init__(self, dsn):
        self.dsn, self.cfg, self.beats = dsn, _cfg(), []

    def heartbeat(self):
        self.beats.append(time.monotonic())


def test_a_long_maintenance_run_keeps_heartbeating_and_the_beats_stop_with_it(dsn):
    """A run held up for seconds (a rollup or a detach waiting on locks) must not look like a hung
    child to the supervisor: _run_beating beats about once a second until run_once returns, then
    its heartbeat thread is joined. The hold is a real lock on a real connection: the job waits on
    rollup_watermark, which every run reads."""
    ctx = _BeatCounter(dsn)
    job = maintenance.Maintenance(ctx)
    holder = psycopg2.connect(dsn)
    try:
        with holder.cursor() as cur:
            cur.execute("LOCK TABLE rollup_watermark IN ACCESS EXCLUSIVE MODE")
        run = threading.Thread(target=job._run_beating, args=(job.db.get(),))
        run.start()
        time.sleep(4.0)           # beats due at about 1, 2 and 3 s: 1 s of slack for a loaded machine
        assert run.is_alive(), "the run was held up by the lock all along"
    finally:
        holder.rollback()         # the run goes on and finishes
        holder.close()
    run.join(60)
    assert not run.is_alive()
    beats = len(ctx.beats)
    assert beats >= 3, f"{beats} heartbeats in a run of at least 4 s"
    assert not [t for t in threading.enumerate() if t.name == "heartbeat"], "the heartbeat thread was joined"
    time.sleep(1.5)               # longer than the beat interval: a beater still running would beat again
    assert len(ctx.beats) == beats
    job.db.close()
    job.behind.close()


def test_the_job_holds_no_transaction_across_its_rests(conn, dsn, monkeypatch):
    """Twelfth session's soak: the job's first run held one transaction for 324 s (REPEATABLE
    READ across every paced statement of the rollup and of the summary build), so the queue's
    deleted rows could not be vacuumed and lag passed 1 s. Now, at every rest of the rollups
    and of a summary build, the job's backend is outside any transaction, and readers of the
    summary still see the old rows, whole, until the build replaces them in one commit."""
    monkeypatch.setattr(pacing, "SLICE_ROWS", 100)     # many slices and chunks: many rests
    monkeypatch.setattr(pacing, "FIRST_CHUNK", 200)
    ensure_past_partitions(conn, 2)
    ids = add_urls(conn, 300)
    with conn.cursor() as cur:
        cur.execute("SELECT date_trunc('hour', now(), 'UTC') - interval '3 hours'")
        start = cur.fetchone()[0]
    conn.commit()
    insert_results(conn, ids, start, start + 3 * HOUR, step_s=300)
    watcher = psycopg2.connect(dsn)
    watcher.autocommit = True
    pid = conn.get_backend_pid()
    seen = {"states": [], "summaries": []}

    def rest(_seconds):
        with watcher.cursor() as cur:
            cur.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,))
            seen["states"].append(cur.fetchone()[0])
            cur.execute("SELECT count(*), coalesce(sum(ok_24h), 0) FROM uptime_summary")
            seen["summaries"].append(cur.fetchone())

    def paced():                                   # every chunk the smallest: many statements, many rests
        return Pace(duty=0.5, target_s=1e-6, sleep=rest)
    try:
        rollup.catch_up_hours(conn, 0.0, pace=paced())
        rollup.catch_up_days(conn, pace=paced())
        assert assert_rollups_match_raw(conn, "rollup_hour", "hour", start + 3 * HOUR) == 3 * 300
        assert len(seen["states"]) >= 10 and set(seen["states"]) == {"idle"}, seen["states"]
        assert summary.refresh(conn, 0.0, pace=paced())["summary"] == "built"
        with conn.cursor() as cur:
            cur.execute("SELECT count(*), sum(ok_24h) FROM uptime_summary")
            old = cur.fetchone()
        conn.commit()
        assert old[0] == 300 and old[1] > 0
        with conn.cursor() as cur:                 # other rollups to build from, and a build due
            cur.execute("UPDATE rollup_hour SET ok = ok + 1")
            cur.execute("DELETE FROM uptime_summary_state")
        conn.commit()
        seen["states"].clear()
        seen["summaries"].clear()
        assert summary.refresh(conn, 0.0, pace=paced())["summary"] == "built"
    finally:
        watcher.close()
    assert len(seen["states"]) >= 2 and set(seen["states"]) == {"idle"}, seen["states"]
    assert set(seen["summaries"]) == {old}                   # the old summary, whole, at every rest
    with conn.cursor() as cur:
        cur.execute("SELECT count(*), sum(ok_24h) FROM uptime_summary")
        new = cur.fetchone()
    conn.rollback()
    assert new == (300, old[1] + 3 * 300)
