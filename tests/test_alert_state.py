"""Alert state on a real PostgreSQL: url_state, incidents and the outbox move with each result
batch (complete_tasks -> alert_apply_results), in the same transaction.

Results are written through store.complete_tasks exactly as a consumer does: a task row is
leased to an owner, then completed with its result. Slots are chosen by the test, so order
and lateness are controlled without sleeping.
"""

import datetime
import threading

import psycopg2
import pytest

from sitewatch.db import store

# Slots from yesterday's UTC midnight: task_result is partitioned by day, and a fresh database
# has partitions from yesterday on.
T0 = datetime.datetime.now(datetime.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) \
    - datetime.timedelta(days=1)
DEFAULTS = {"failure_threshold": 3, "success_threshold": 2, "channels": ["ops", "mail"]}


def connect(dsn):
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    return conn


def q(conn, sql, params=None):
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else None


def add_url(conn, url="http://a.example/", **overrides):
    cols = ", ".join(["url", "period", "timeout", "next_check_at", *overrides])
    vals = ", ".join(["%s", "60", "5", "now() + interval '1 day'", *["%s"] * len(overrides)])
    return q(conn, f"INSERT INTO url ({cols}) VALUES ({vals}) RETURNING id", (url, *overrides.values()))[0][0]


def slot(i):
    return T0 + datetime.timedelta(minutes=i)


def row(conn, url_id, i, ok, owner="host1:consumer-1:1", cert=None, kind=None):
    """Lease a task for slot i to `owner` and return its result row (as the consumer builds it)."""
    task_id = q(conn, "INSERT INTO task (url_id, scheduled_at, available_at, status, attempts, lease_owner)"
                      " VALUES (%s, %s, now(), 1, 1, %s) RETURNING id", (url_id, slot(i), owner))[0][0]
    error_kind = None if ok else (kind or "status")
    return (task_id, 1, owner, slot(i), 10.0 if ok else None, 200 if ok else 503, None, ok, error_kind,
            None if ok else "HTTP 503 Service Unavailable", cert)


def feed(conn, url_id, outcomes, start=0, defaults=DEFAULTS, **kw):
    """Record one result per slot, one batch each; returns the next slot number."""
    for i, ok in enumerate(outcomes, start=start):
        assert store.complete_tasks(conn, [row(conn, url_id, i, ok, **kw)], defaults) == []
    return start + len(outcomes)


def outbox(conn):
    return q(conn, "SELECT kind, channel, key FROM alert_outbox ORDER BY id")


def state(conn, url_id):
    return q(conn, "SELECT state, fail_streak, ok_streak, incident_id FROM url_state WHERE url_id = %s",
             (url_id,))[0]


@pytest.fixture
def conn(dsn):
    c = connect(dsn)
    yield c
    c.close()


def test_threshold_failures_open_one_incident_and_successes_close_it(conn):
    url = add_url(conn)
    n = feed(conn, url, [False, False, True])
    assert outbox(conn) == [] and state(conn, url)[0] == "unknown"
    n = feed(conn, url, [False, False, False], start=n)
    assert state(conn, url)[0] == "down"
    (incident_id,) = q(conn, "SELECT id FROM incident")[0]
    assert outbox(conn) == [("down", "ops", f"incident:{incident_id}:down"),
                        ("down", "mail", f"incident:{incident_id}:down")]
    n = feed(conn, url, [False, True], start=n)
    assert len(outbox(conn)) == 2, "one good slot is not enough to close"
    feed(conn, url, [True], start=n)
    assert state(conn, url) == ("up", 0, 2, None)
    assert [k for k, *_ in outbox(conn)] == ["down", "down", "up", "up"]
    started, ended, first_kind, last_kind, failed = q(
        conn, "SELECT started_at, ended_at, first_error_kind, last_error_kind, failed_checks FROM incident")[0]
    assert started == slot(3) and ended == slot(7)        # first failed slot; first good slot
    assert (first_kind, last_kind, failed) == ("status", "status", 4)


def test_unknown_to_up_is_silent_and_url_overrides_win(conn):
    url = add_url(conn, failure_threshold=1, success_threshold=1, notify=["pager"])
    feed(conn, url, [True])
    assert state(conn, url)[0] == "up" and outbox(conn) == []
    feed(conn, url, [False], start=1)
    assert state(conn, url)[0] == "down"
    assert [(k, c) for k, c, _ in outbox(conn)] == [("down", "pager")]


def test_a_late_result_for_an_old_slot_changes_nothing(conn):
    url = add_url(conn)
    feed(conn, url, [True, True], start=10)
    before = q(conn, "SELECT * FROM url_state")
    feed(conn, url, [False, False, False, False], start=0)      # slots 0-3: older than slot 11
    assert q(conn, "SELECT * FROM url_state") == before
    assert q(conn, "SELECT count(*) FROM incident")[0][0] == 0 and outbox(conn) == []
    assert q(conn, "SELECT count(*) FROM task_result")[0][0] == 6, "the late results are still recorded"


def test_lost_slots_count_toward_nothing_and_do_not_break_a_streak(conn):
    url = add_url(conn)
    feed(conn, url, [False, False])
    feed(conn, url, [False], start=2, kind="lost")
    assert state(conn, url)[:2] == ("unknown", 2)
    feed(conn, url, [False], start=3)
    assert state(conn, url)[0] == "down"


def test_many_slots_of_one_url_in_one_batch_apply_in_slot_order(conn):
    url = add_url(conn)
    # complete_tasks never carries two slots of a URL (a URL has one task at a time); the function
    # still takes them in slot order, one round each.
    results = [(url, slot(i), ok, None if ok else "connect", None, None, "h:c:1", False)
               for i, ok in [(4, True), (0, False), (3, True), (1, False), (2, False)]]
    q(conn, "INSERT INTO alert_outbox (key, channel, url_id, incident_id, kind, detail)"
            " SELECT * FROM alert_apply_results(%s::alert_result[], 3, 2, '{ops,mail}')", (results,))
    assert state(conn, url) == ("up", 0, 2, None)
    assert [k for k, *_ in outbox(conn)] == ["down", "down", "up", "up"]
    assert q(conn, "SELECT started_at, ended_at FROM incident") == [(slot(0), slot(3))]


def test_the_database_allows_one_open_incident_per_url(conn):
    q(conn, "INSERT INTO incident (url_id, url, started_at, failed_checks) VALUES (1, 'x', now(), 3)")
    with pytest.raises(psycopg2.errors.UniqueViolation):
        q(conn, "INSERT INTO incident (url_id, url, started_at, failed_checks) VALUES (1, 'x', now(), 3)")


def test_failures_from_a_host_without_connectivity_count_toward_nothing(conn):
    url = add_url(conn)
    q(conn, "INSERT INTO alert_host VALUES ('cut-off', false, now()), ('fine', true, now())")
    feed(conn, url, [False] * 5, owner="cut-off:consumer-1:7")
    assert state(conn, url)[:2] == ("unknown", 0) and q(conn, "SELECT count(*) FROM incident")[0][0] == 0
    feed(conn, url, [False] * 3, start=5, owner="fine:consumer-1:8")
    assert state(conn, url)[0] == "down"


def test_certificate_expiry_is_announced_once_per_threshold_and_again_after_renewal(conn):
    url = add_url(conn)
    feed(conn, url, [True] * 3, cert=40)
    feed(conn, url, [True] * 3, start=3, cert=13)
    feed(conn, url, [True] * 3, start=6, cert=12)
    assert [key for kind, ch, key in outbox(conn) if ch == "ops"] == [f"cert:{url}:0:14"]
    feed(conn, url, [True], start=9, cert=6)
    feed(conn, url, [True], start=10, cert=90)          # renewed
    feed(conn, url, [True], start=11, cert=29)
    # Certificates are told apart by their estimated expiry (slot + days left; issue 24 B11):
    # the slots are minutes apart, so 13 and 6 days left are two certificates here.
    assert [key for kind, ch, key in outbox(conn) if ch == "ops"] == [
        f"cert:{url}:0:14", f"cert:{url}:1:7", f"cert:{url}:2:30"]


def test_alternating_results_give_one_flapping_notice_then_the_settled_state(conn):
    url = add_url(conn)
    n = feed(conn, url, [True, False] * 15)
    assert [(k, key) for k, ch, key in outbox(conn) if ch == "ops"] == [("flapping", f"flapping:{url}:1:start")]
    n = feed(conn, url, [True] * 25, start=n)
    ops = [(k, key) for k, ch, key in outbox(conn) if ch == "ops"]
    assert ops[-1] == ("flapping", f"flapping:{url}:1:stop") and len(ops) == 2
    assert q(conn, "SELECT detail->>'state' FROM alert_outbox ORDER BY id DESC LIMIT 1") == [("up",)]


def test_writers_racing_on_the_same_urls_never_deadlock_and_open_one_incident_each(dsn, conn):
    """Two connections apply overlapping batches (listed in opposite orders) at once: the rows
    are locked in url_id order, so neither deadlocks, and each URL gets one incident."""
    urls = [add_url(conn, f"http://h{i}.example/") for i in range(200)]
    errors, barrier = [], threading.Barrier(2)

    def writer(order, host):
        c = connect(dsn)
        try:
            barrier.wait()
            for i in range(6):
                results = [(u, slot(i), False, "connect", "refused", None, f"{host}:consumer-1:1", False)
                           for u in order]
                q(c, "INSERT INTO alert_outbox (key, channel, url_id, incident_id, kind, detail)"
                     " SELECT * FROM alert_apply_results(%s::alert_result[], 3, 2, '{ops}')"
                     " ON CONFLICT (key, channel) DO NOTHING", (results,))
        except Exception as e:   # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            c.close()

    threads = [threading.Thread(target=writer, args=(urls, "a")),
               threading.Thread(target=writer, args=(urls[::-1], "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert q(conn, "SELECT count(*), count(DISTINCT url_id) FROM incident") == [(200, 200)]
    assert q(conn, "SELECT count(*) FROM alert_outbox WHERE kind = 'down'")[0][0] == 200
    # Both send slots 0-5: a slot already applied, or older than the last applied, counts once at most.
    low, high = q(conn, "SELECT min(failed_checks), max(failed_checks) FROM incident")[0]
    assert 3 <= low and high <= 6


def test_a_certificate_seen_by_three_hosts_is_announced_once(dsn, conn):
    url = add_url(conn, "https://c.example/")
    others = [connect(dsn) for _ in range(2)]
    try:
        for i in range(9):      # three hosts take turns checking, each sees 13 days left
            host = i % 3
            writer = conn if host == 0 else others[host - 1]
            feed(writer, url, [True], start=i, owner=f"host{host}:consumer-1:{host}", cert=13)
    finally:
        for c in others:
            c.close()
    assert [(k, c) for k, c, _ in outbox(conn)] == [("cert_expiring", "ops"), ("cert_expiring", "mail")]


def test_reminders_every_repeat_interval_while_down_not_when_silenced(conn):
    from sitewatch.alerts import store as alerts_store
    url = add_url(conn)
    feed(conn, url, [False] * 3)
    assert alerts_store.queue_reminders(conn, 60, ["ops"]) == 0, "not due yet"
    q(conn, "UPDATE incident SET last_notice_at = now() - interval '61 seconds'")
    assert alerts_store.queue_reminders(conn, 60, ["ops"]) == 1
    assert alerts_store.queue_reminders(conn, 60, ["ops"]) == 0, "the next one is an interval later"
    (incident_id,) = q(conn, "SELECT id FROM incident")[0]
    assert outbox(conn)[-1] == ("reminder", "ops", f"incident:{incident_id}:reminder:1")
    q(conn, "INSERT INTO silence (pattern, like_pattern, ends_at) VALUES ('x', '%%', now() + interval '1h')")
    q(conn, "UPDATE incident SET last_notice_at = now() - interval '61 seconds'")
    assert alerts_store.queue_reminders(conn, 60, ["ops"]) == 0


def test_when_a_silence_ends_only_a_state_that_differs_from_the_last_notice_is_sent(conn):
    from sitewatch.alerts import store as alerts_store
    blip, long, quiet = (add_url(conn, f"http://{n}.example/") for n in ("blip", "long", "quiet"))
    q(conn, "INSERT INTO silence (pattern, like_pattern, ends_at) VALUES ('x', 'http://%%', now() + interval '1h')")
    feed(conn, blip, [False] * 3 + [True] * 2)     # down and up inside
    feed(conn, long, [False] * 3)                  # down inside, still down
    feed(conn, quiet, [True] * 3)                  # up all along
    assert outbox(conn) == []
    assert alerts_store.settle_silences(conn, ["ops"]) == 0, "still in force"
    q(conn, "UPDATE silence SET ends_at = now()")
    assert alerts_store.settle_silences(conn, ["ops"]) == 1
    (incident_id,) = q(conn, "SELECT id FROM incident WHERE url_id = %s", (long,))[0]
    assert outbox(conn) == [("down", "ops", f"incident:{incident_id}:down")]
    assert alerts_store.settle_silences(conn, ["ops"]) == 0, "settled once"
    feed(conn, long, [True] * 2, start=3)
    assert [k for k, *_ in outbox(conn)] == ["down", "up", "up"]


def test_incidents_and_notices_never_keep_url_credentials_or_query(conn):
    url = add_url(conn, "http://user:pw-SECRET@a.example/health?token=tok-SECRET")
    feed(conn, url, [False] * 3)
    rows = q(conn, "SELECT i::text FROM incident i") + q(conn, "SELECT o::text FROM alert_outbox o")
    assert rows and not any("SECRET" in text for (text,) in rows), rows
    assert q(conn, "SELECT url FROM incident") == [("http://***@a.example/health?***",)]


def test_an_open_incident_left_behind_is_adopted_not_a_failed_batch(conn):
    url = add_url(conn)
    q(conn, "INSERT INTO incident (url_id, url, started_at, failed_checks) VALUES (%s, 'x', now(), 1)", (url,))
    feed(conn, url, [False] * 3)
    assert q(conn, "SELECT count(*) FROM incident") == [(1,)] and state(conn, url)[0] == "down"
    feed(conn, url, [True] * 2, start=3)
    assert q(conn, "SELECT count(*) FROM incident WHERE ended_at IS NOT NULL") == [(1,)]


def test_every_url_gets_one_state_row_on_add_and_on_import_upserts(conn):
    """The statement-level trigger: one url_state row per inserted URL, none for updated ones."""
    from sitewatch import config
    from sitewatch.urlspec import make_entry
    check = config.load(env={}).check
    entries = [make_entry({"url": f"http://import{i}.example/"}, check) for i in range(3)]
    store.import_urls(conn, entries)
    store.import_urls(conn, entries + [make_entry({"url": "http://import3.example/", "period": 30}, check)])
    rows = q(conn, "SELECT u.url, s.state FROM url u LEFT JOIN url_state s ON s.url_id = u.id ORDER BY u.url")
    assert rows == [(f"http://import{i}.example/", "unknown") for i in range(4)]
    assert q(conn, "SELECT count(*) FROM url_state")[0][0] == 4
