"""What a user sees on a live install (issue 26): chart ticks, check times to the second for
fast URLs, and the list page's strip of the last slots.

Real parts only: a migrated PostgreSQL, the real `sitewatch web` over real sockets. The tick
rule is a pure function and is tested directly.
"""

import datetime
import html
import re

import psycopg2
import pytest

from sitewatch.web import data, glance, svg
from tests.historydata import ensure_past_partitions

EVIL = '<script>alert("x")</script> & "q" <b>b</b>'     # fits in a title (glance.ERROR_CHARS)
FAST = 10                  # seconds: a URL checked more than once a minute


# --- chart ticks -------------------------------------------------------------------------------

@pytest.mark.parametrize("max_ms, labels", [
    (0.3, ["0 ms", "0.1 ms", "0.2 ms", "0.3 ms"]),
    (2, ["0 ms", "0.5 ms", "1.0 ms", "1.5 ms", "2.0 ms"]),
    (1.7, ["0 ms", "0.5 ms", "1.0 ms", "1.5 ms", "2.0 ms"]),
    (40, ["0 ms", "10 ms", "20 ms", "30 ms", "40 ms"]),
    (900, ["0 s", "0.2 s", "0.4 s", "0.6 s", "0.8 s", "1.0 s"]),
    (12_000, ["0 s", "5 s", "10 s", "15 s"]),
])
def test_axis_ticks_step_1_2_5_with_the_decimals_the_step_needs(max_ms, labels):
    ticks = svg.axis_ticks(max_ms)
    assert [label for _, label in ticks] == labels
    values = [value for value, _ in ticks]
    assert values[0] == 0 and values[-1] >= max_ms and len(values) <= 6
    steps = {round(b - a, 9) for a, b in zip(values, values[1:], strict=False)}
    assert len(steps) == 1                                    # evenly spaced
    mantissa = f"{steps.pop():e}".split("e")[0]
    assert float(mantissa) in (1, 2, 5)                       # 1-2-5 x 10^k
    assert len(set(labels)) == len(labels)                    # no label repeats


@pytest.mark.parametrize("top", [0.0004, 0.3, 1.2, 2, 7, 40, 333, 900, 999.9, 1001, 12_000, 59_000, 3.7e6])
def test_axis_labels_never_repeat_at_any_scale(top):
    labels = [label for _, label in svg.axis_ticks(top)]
    assert len(set(labels)) == len(labels), labels
    assert svg.axis_ticks(top)[-1][0] >= top


def test_response_times_under_10_ms_keep_a_decimal():
    assert [svg.ms(v) for v in (0.4, 1.94, 9.94, 9.96, 231.4, 1250)] == [
        "0.4 ms", "1.9 ms", "9.9 ms", "10 ms", "231 ms", "1.25 s"]


def test_the_response_chart_prints_the_ticks():
    start = datetime.datetime(2026, 12, 6, 0, tzinfo=datetime.timezone.utc)
    hours = [{"hour": start + datetime.timedelta(hours=i), "p50_ms": 0.8, "p95_ms": 1.9} for i in range(24)]
    chart = svg.response_chart(hours, start)
    axis = re.findall(r'<text class="axis" x="\d+" y="[\d.]+" text-anchor="end">([^<]*)</text>', chart)
    assert axis == ["0 ms", "0.5 ms", "1.0 ms", "1.5 ms", "2.0 ms"]


# --- a fast URL on a live-like database ------------------------------------------------------------

@pytest.fixture
def fast(dsn):
    """A URL checked every 10 s for an hour (its newest slots: ok, failed with the site's hostile
    text, lost, missed), a slow one (600 s), and an incident each; returns (dsn, ids, slots)."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")
        ids = {}
        for name, period in (("fast", FAST), ("slow", 600)):
            cur.execute("INSERT INTO url (url, period, timeout, next_check_at, created_at) VALUES "
                        "(%s, %s, 5, now() + interval '1 hour', now() - interval '1 hour') RETURNING id",
                        (f"https://{name}.example.com/", period))
            ids[name] = cur.fetchone()[0]
        # slot k (0 = newest) at X - 10k s, X three seconds ago, to the second
        cur.execute("SELECT date_trunc('second', now()) - interval '3 seconds'")
        newest = cur.fetchone()[0]
        slots = [newest - datetime.timedelta(seconds=FAST * k) for k in range(120)]
        for k, at in enumerate(slots):
            if k == 3:
                continue                                           # missed: no result at all
            ok = k not in (1, 2)
            kind = None if ok else "lost" if k == 2 else "http_status"
            error = None if ok else "not recorded after 3 attempts" if k == 2 else EVIL
            cur.execute("INSERT INTO task_result (url_id, scheduled_at, started_at, response_time_ms, status_code, "
                        "ok, error_kind, error, checked_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'test')",
                        (ids["fast"], at, at, 0.4 + (k % 7) * 0.25 if ok else None,
                         None if k == 2 else 200 if ok else 502,
                         ok, kind, error))
        for name, started in (("fast", slots[1] - datetime.timedelta(seconds=7)),
                              ("slow", slots[1].replace(second=0) - datetime.timedelta(minutes=30))):
            cur.execute("INSERT INTO incident (url_id, url, started_at, first_error_kind, first_error, "
                        "last_error_kind, last_error, failed_checks) VALUES (%s, %s, %s, 'http_status', 'x', "
                        "'http_status', 'x', 2)", (ids[name], f"https://{name}.example.com/", started))
    conn.close()
    return dsn, ids, slots


def _utc(at, fmt):
    return at.astimezone(datetime.timezone.utc).strftime(fmt)


def test_times_show_seconds_where_the_period_is_under_a_minute(fast, web_factory):
    dsn, ids, slots = fast
    web = web_factory(dsn)
    page = web.get(f"/urls/{ids['fast']}").text
    checks = page[page.index('id="checks"'):]
    for at in slots[:5]:
        if at != slots[3]:
            assert _utc(at, "%Y-%m-%d %H:%M:%S UTC") in checks         # recent checks, to the second
    started = slots[1] - datetime.timedelta(seconds=7)
    assert _utc(started, "%Y-%m-%d %H:%M:%S UTC") in page               # its incident
    incidents = web.get("/incidents").text
    assert _utc(started, "%Y-%m-%d %H:%M:%S UTC") in incidents
    # A URL checked every 10 minutes keeps the minute format.
    slow_started = slots[1].replace(second=0) - datetime.timedelta(minutes=30)
    assert _utc(slow_started, "%Y-%m-%d %H:%M UTC<") in incidents
    assert _utc(slow_started, "%Y-%m-%d %H:%M:%S UTC") not in incidents
    # The API's checks carry seconds (ISO 8601, to the microsecond).
    items = web.get(f"/api/v1/urls/{ids['fast']}/checks?limit=3").json()["items"]
    assert [datetime.datetime.fromisoformat(c["scheduled_at"]) for c in items] == slots[:3]


def _strip(page: str, url: str) -> list[tuple[str, str]]:
    row = re.search(r'<tr data-state="[a-z]+">(?:(?!</tr>).)*?' + re.escape(url) + r"(?:(?!</tr>).)*</tr>", page, re.S)
    cell = re.search(r'<td class="glance">(.*?)</td>', row.group(0), re.S).group(1)
    found = re.findall(r'<i class=([a-z]) title="([^"]*)"></i>', cell)
    kinds = {v: k for k, v in glance.CLASSES.items()}
    return [(kinds[cls], title) for cls, title in found]


def test_the_list_shows_the_last_slots_with_escaped_titles(fast, web_factory):
    dsn, ids, slots = fast
    web = web_factory(dsn)
    page = web.get("/").text
    strip = _strip(page, "https://fast.example.com/")
    assert len(strip) == glance.SLOTS
    kinds = [k for k, _ in strip]
    while kinds[-1] == "missed" and len(kinds) > 4:       # slots that came due while the test ran
        kinds.pop()
    assert kinds[-4:] == ["missed", "lost", "failed", "ok"], kinds
    assert set(kinds[:-4]) == {"ok"}
    titles = {k: html.unescape(t) for k, t in strip[len(kinds) - 4:len(kinds)]}
    assert titles["ok"] == f"{_utc(slots[0], '%H:%M:%S')} ok 200 0.4 ms" or slots[0].date() != slots[-1].date()
    assert EVIL in titles["failed"] and "502" in titles["failed"] and _utc(slots[1], "%H:%M:%S") in titles["failed"]
    assert "lost" in titles["lost"] and "not recorded" in titles["lost"]
    assert "missed" in titles["missed"] and _utc(slots[3], "%H:%M:%S") in titles["missed"]
    # The site's text is escaped, never markup.
    assert "<script>alert" not in page and "<b>b</b>" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &#34;q&#34; &lt;b&gt;b&lt;/b&gt;" in page
    # The slow URL (600 s, created an hour ago, never checked): the 5 slots past (the 6th may
    # still be being checked), all missed.
    slow = _strip(page, "https://slow.example.com/")
    assert [k for k, _ in slow] == ["missed"] * 5
    # Minutes, and the date only for a slot of another day (an hour ago, just after midnight).
    shown = re.fullmatch(r"(?:(\d{4}-\d\d-\d\d) )?\d\d:\d\d missed: no check recorded", html.unescape(slow[0][1]))
    assert shown, slow[0][1]
    yesterday = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1)
    assert shown.group(1) in (None, yesterday.strftime("%Y-%m-%d"))


def test_strip_cells_from_results():
    """The slot arithmetic on its own: gaps are missed slots, and so are the periods after the
    last result (but the one still being checked) and before the first while the URL existed."""
    now = datetime.datetime(2026, 12, 6, 12, 0, 0, tzinfo=datetime.timezone.utc)

    def result(seconds_ago, ok=True, kind=None):
        return {"scheduled_at": now - datetime.timedelta(seconds=seconds_ago), "ok": ok, "status_code": 200,
                "response_time_ms": 3.0, "error_kind": kind, "error": None if ok else "boom"}
    results = [result(95), result(75, False, "timeout"), result(65, False, "lost"), result(25)]
    cells = glance.cells(results, 10, now, now - datetime.timedelta(hours=1), slots=12)
    kinds = [c["kind"] for c in cells]
    # window: 12 + 1 slots back from 12:00:00 -> from 11:57:50; results at 11:58:25, :45, :55 and
    # 11:59:35; the slot at 11:59:55 may still be being checked
    assert kinds == ["missed"] * 3 + ["ok", "missed", "failed", "lost"] + ["missed"] * 3 + ["ok", "missed"]
    assert cells[0]["title"] == "11:57:55 missed: no check recorded"
    assert cells[5]["title"] == "11:58:45 failed 200 timeout: boom"
    assert cells[6]["title"] == "11:58:55 lost (not checked): boom"
    assert cells[3]["title"] == "11:58:25 ok 200 3.0 ms"
    # No result in the window: its slots so far were missed (times counted back from now).
    assert glance.cells([], 10, now, now - datetime.timedelta(seconds=25)) == [
        {"kind": "missed", "cls": "m", "title": "11:59:50 missed: no check recorded"}]
    assert glance.cells([], 10, now, now) == []
    # A new URL: no slot before it existed.
    assert [c["kind"] for c in glance.cells([result(15)], 10, now, now - datetime.timedelta(seconds=16))] == ["ok"]


# --- the strip's budget: one query per page, index probes per row, no scan ------------------------------

class CountingConnection(psycopg2.extensions.connection):
    """A real connection that counts the cursors (statements) opened on it."""
    opened = 0

    def cursor(self, *args, **kwargs):
        self.opened += 1
        return super().cursor(*args, **kwargs)


def _plan_nodes(node):
    yield node
    for child in node.get("Plans", ()):
        yield from _plan_nodes(child)


def test_the_strip_is_one_query_that_probes_the_index_per_row(dsn):
    conn = psycopg2.connect(dsn, connection_factory=CountingConnection)
    conn.autocommit = True
    ensure_past_partitions(conn, 3)
    with conn.cursor() as cur:
        cur.execute("INSERT INTO url (url, period, timeout, next_check_at, created_at) "
                    "SELECT format('https://s%s.example/', g), 10, 5, now(), now() - interval '3 days' "
                    "FROM generate_series(1, 2000) g")
        # 40 recent slots each (10 s apart), and one an hour for three days (older partitions)
        cur.execute("INSERT INTO task_result (url_id, scheduled_at, started_at, ok, response_time_ms, "
                    "status_code, checked_by) "
                    "SELECT u.id, s, s, true, 5, 200, 'test' FROM url u, "
                    "generate_series(now() - interval '399 seconds', now(), interval '10 seconds') s "
                    "UNION ALL SELECT u.id, s, s, true, 5, 200, 'test' FROM url u, "
                    "generate_series(now() - interval '3 days', now() - interval '1 hour', interval '1 hour') s")
        cur.execute("ANALYZE task_result")
        cur.execute("ANALYZE url")
        cur.execute("SELECT id, period, created_at FROM url ORDER BY url LIMIT 100")
        urls = [{"id": i, "period": p, "created_at": c} for i, p, c in cur.fetchall()]
    before = conn.opened
    strips = glance.for_page(conn, urls)
    assert conn.opened - before == 1                                   # one statement for the page
    assert len(strips) == 100 and all(len(c) == glance.SLOTS for c in strips.values())
    params = {"ids": [u["id"] for u in urls], "periods": [u["period"] for u in urls], "slots": glance.SLOTS}
    with conn.cursor() as cur:
        cur.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, FORMAT JSON) " + data.STRIP_SQL, params)
        nodes = list(_plan_nodes(cur.fetchone()[0][0]["Plan"]))
    summary = [(n["Node Type"], n.get("Relation Name"), n.get("Index Name"), n["Actual Rows"], n["Actual Loops"])
               for n in nodes]
    on_results = [n for n in nodes if (n.get("Relation Name") or "").startswith("task_result")]
    assert on_results, summary
    for n in on_results:                          # per URL: a backward walk of (url_id, scheduled_at)
        assert n["Node Type"] in ("Index Scan", "Index Only Scan"), summary
        # the slot key (url_id, scheduled_at, region): named *_slot_key on partitions migration 0013
        # converted, by PostgreSQL on partitions created after it
        assert n["Index Name"].endswith(("_slot_key", "_url_id_scheduled_at_region_idx")), summary
        assert n["Scan Direction"] == "Backward", summary
        assert "url_id = p.id" in n["Index Cond"], summary
        assert n["Actual Loops"] <= 100, summary
    assert not any(n["Node Type"] in ("Seq Scan", "Bitmap Heap Scan", "Sort", "Hash") for n in nodes), summary
    limits = [n for n in nodes if n["Node Type"] == "Limit"]
    assert limits and limits[0]["Actual Loops"] == 100, summary
    read = sum(n["Actual Rows"] * n["Actual Loops"] for n in on_results)
    assert read <= 100 * (glance.SLOTS + 1), summary      # the page's cells, not the table's 224,000 rows
    conn.close()


@pytest.mark.parametrize("failing", [False, True])
def test_a_page_of_100_full_strips_stays_small(dsn, web_factory, failing):
    """100 URLs checked every 10 s, each with all its slots in the strip: the list page stays
    under 200 KB when they are up; when every one failed every check with a 300-character
    error (the longest stored), titles cut errors to glance.ERROR_CHARS."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("INSERT INTO url (url, period, timeout, next_check_at, created_at) "
                    "SELECT format('https://site-%s.example.org/', lpad(g::text, 3, '0')), 10, 5, now(), "
                    "now() - interval '1 hour' FROM generate_series(1, 100) g")
        cur.execute("INSERT INTO task_result (url_id, scheduled_at, started_at, ok, response_time_ms, status_code, "
                    "error_kind, error, checked_by) "
                    "SELECT u.id, s, s, NOT %(f)s, CASE WHEN %(f)s THEN NULL ELSE 123.4 END, "
                    "CASE WHEN %(f)s THEN 503 ELSE 200 END, CASE WHEN %(f)s THEN 'http_status' END, "
                    "CASE WHEN %(f)s THEN repeat('e', 300) END, 'test' FROM url u, "
                    "generate_series(now() - interval '400 seconds', now() - interval '1 second', "
                    "interval '10 seconds') s", {"f": failing})
    conn.close()
    page = web_factory(dsn).get("/").text
    assert page.count('<i class=') == 100 * glance.SLOTS
    assert page.count('<i class=f ' if failing else '<i class=o ') >= 100 * (glance.SLOTS - 2)
    assert len(page.encode()) < (400_000 if failing else 200_000), len(page.encode())
