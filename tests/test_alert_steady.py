"""The steady path of alert_apply_results (migration 0018) against version 8's whole statement
(alert_apply_changes), on a real PostgreSQL: every batch is applied both ways from the same
state, in two transactions, and the state rows, incidents and notices must be the same.

Histories are random but seeded (mostly ok, some degraded, failed, lost, late and repeated
slots, certificates near and far, a silence over some URLs), so the batches hold steady rows,
rows that change state, and URLs that are steady then not, and the reverse.
"""

import datetime
import random

import psycopg2
import pytest

T0 = datetime.datetime.now(datetime.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) \
    - datetime.timedelta(days=1)
URLS = 120

APPLY = """SELECT * FROM {fn}((SELECT array_agg(ROW(u, s, ok, ek, e, cd, cb, dg)::alert_result)
                              FROM unnest(%s::bigint[], %s::timestamptz[], %s::boolean[], %s::text[], %s::text[],
                                          %s::integer[], %s::text[], %s::boolean[])
                                   AS t (u, s, ok, ek, e, cd, cb, dg)),
                             %s, 2, '{{ops,mail}}', true)"""

# url_state as a whole but updated_at (now() differs between the two transactions)
STATE = """SELECT url_id, state, since, last_slot, fail_streak, ok_streak, streak_since, streak_error_kind,
                  streak_error, incident_id, notified_state, flap_bits, flap_len, flapping, flap_seq,
                  cert_days_left, cert_seq, cert_notified, cert_known::text, degraded_streak, clean_streak,
                  degraded_seq
           FROM url_state ORDER BY url_id"""
INCIDENTS = "SELECT id, url_id, started_at, ended_at, failed_checks, last_error_kind FROM incident ORDER BY id"


def snapshot(cur, fn, batch, failure_threshold):
    cur.execute(APPLY.format(fn=fn), (*batch, failure_threshold))
    notices = sorted(cur.fetchall(), key=repr)
    cur.execute(STATE)
    state = cur.fetchall()
    cur.execute(INCIDENTS)
    return notices, state, cur.fetchall()


def outcome(rng, cert_days):
    """(ok, error_kind, error, cert_days_left, degraded) of one random result."""
    roll = rng.random()
    cert = rng.choice([None, None, cert_days, cert_days, rng.randint(0, 60)])
    if roll < 0.80:
        return True, None, None, cert, rng.choice([False, False, None])
    if roll < 0.88:
        return True, None, None, cert, True
    if roll < 0.98:
        return False, "status", "HTTP 503", None, None
    return False, "lost", "no result after 3 attempts", None, None


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_steady_path_moves_state_as_version_8_does(dsn, seed):
    rng = random.Random(seed)
    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    cur.execute("INSERT INTO url (url, period, timeout, next_check_at, failure_threshold)"
                " SELECT 'http://h' || i || '.example/', 60, 5, now() + interval '1 day',"
                "        CASE WHEN i %% 7 = 0 THEN 1 END FROM generate_series(1, %s) i RETURNING id", (URLS,))
    ids = [r[0] for r in cur.fetchall()]
    cur.execute("INSERT INTO silence (pattern, like_pattern, ends_at)"
                " VALUES ('http://h1*', 'http://h1%%', now() + interval '1 hour')")
    conn.commit()
    cert_days = {url_id: rng.randint(25, 90) for url_id in ids}
    steady_rounds = 0
    for rnd in range(40):
        rows = []
        for url_id in ids:
            slots = [rnd * 2]
            if rng.random() < 0.05:
                slots.append(rnd * 2 + 1)       # two results of one URL in the batch: rounds
            if rng.random() < 0.03:
                slots.append(rnd * 2 - 3)       # a late one, older than the state's last slot
            for s in slots:
                ok, kind, error, cert, degraded = outcome(rng, cert_days[url_id])
                rows.append((url_id, T0 + datetime.timedelta(minutes=s), ok, kind, error, cert,
                             "host1:consumer-1:1", degraded))
            cert_days[url_id] = max(cert_days[url_id] - rng.choice([0, 0, 1]), 0)
        batch = [list(column) for column in zip(*rows, strict=True)]
        threshold = rng.choice([3, 3, 1])
        # a rollback does not take back the incident ids drawn: put the sequence back
        cur.execute("SELECT pg_get_serial_sequence('incident', 'id')")
        sequence = cur.fetchone()[0]
        cur.execute(f"SELECT last_value, is_called FROM {sequence}")
        last_value, is_called = cur.fetchone()
        fast = snapshot(cur, "alert_apply_results", batch, threshold)
        conn.rollback()
        cur.execute("SELECT setval(%s, %s, %s)", (sequence, last_value, is_called))
        full = snapshot(cur, "alert_apply_changes", batch, threshold)
        assert fast == full, f"round {rnd}"
        conn.commit()
        cur.execute("SELECT count(*) FROM url_state WHERE state = 'up' AND flap_bits = 0")
        steady_rounds += cur.fetchone()[0] > 0
    # the comparison covered states of every kind, and the steady path had rows to take
    cur.execute("SELECT array_agg(DISTINCT state ORDER BY state) FROM url_state")
    assert {"up", "down"} <= set(cur.fetchone()[0])
    assert steady_rounds > 10
    cur.execute("SELECT count(*) FROM incident")
    assert cur.fetchone()[0] > 0
    conn.close()


def test_a_steady_batch_skips_version_8s_statement(dsn):
    """All rows steady: version 8's function is not called at all (the cut measured in
    docs/benchmarks.md); one changing row: it is called, for that row only."""
    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    cur.execute("SET track_functions = 'all'")
    cur.execute("INSERT INTO url (url, period, timeout, next_check_at)"
                " SELECT 'http://s' || i || '.example/', 60, 5, now() + interval '1 day'"
                " FROM generate_series(1, 4) i RETURNING id")
    ids = [r[0] for r in cur.fetchall()]
    cur.execute("UPDATE url_state SET state = 'up', ok_streak = 5, clean_streak = 5, flap_len = 5")
    conn.commit()

    def apply(minute, oks):
        batch = [ids, [T0 + datetime.timedelta(minutes=minute)] * 4, oks, [None if ok else "status" for ok in oks],
                 [None if ok else "HTTP 503" for ok in oks], [None] * 4, ["h:c:1"] * 4, [False] * 4]
        cur.execute(APPLY.format(fn="alert_apply_results"), (*batch, 3))
        # this transaction's calls (the cumulative view is flushed later)
        cur.execute("SELECT coalesce(sum(calls), 0) FROM pg_stat_xact_user_functions"
                    " WHERE funcname = 'alert_apply_changes'")
        calls = cur.fetchone()[0]
        conn.commit()
        return calls

    before = apply(1, [True] * 4)
    cur.execute("SELECT array_agg(ok_streak ORDER BY url_id), array_agg(last_slot ORDER BY url_id) FROM url_state")
    streaks, last_slots = cur.fetchone()
    assert streaks == [6] * 4 and last_slots == [T0 + datetime.timedelta(minutes=1)] * 4
    after = apply(2, [True, True, True, False])
    cur.execute("SELECT state, fail_streak, flap_bits FROM url_state ORDER BY url_id")
    assert cur.fetchall() == [("up", 0, 0)] * 3 + [("up", 1, 1)]
    assert (before, after) == (0, 1)
    conn.close()
