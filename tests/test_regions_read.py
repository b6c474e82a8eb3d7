"""Regions as readers see them (DESIGN.md section 12, issue 21): `status` (its `regions` map and
"down from a"), `history --region` and its `region` column, the web summary's partial count,
the URL page's row per region and the API's `regions`. Real parts: one seeded PostgreSQL for
the module, the real `sitewatch` command and `sitewatch web` as subprocesses.

The seed: plain.example (no regions, up) and multi.example (regions a, b, c; partial): a down
with its error, b up with response times 10..200 ms, c up but its only host last seen an hour
ago, so absent (its region_absence row, as the notifiers' sweep leaves it). Its uptime: a 0%,
b and c 100%, and the URL's own 100% (each slot once: one region of three down is not a
majority), where counting every region's result gave 66.666%."""

import csv
import datetime
import io
import json
import re

import psycopg2
import pytest

from sitewatch.history import report
from tests.conftest import _fresh_database, cli_for
from tests.conftest_web import WebServer
from tests.historydata import ensure_past_partitions


@pytest.fixture(scope="module")
def module_db(pg_base_dsn, template_db, tmp_path_factory):
    for dsn in _fresh_database(pg_base_dsn, "sitewatch_rr", template_db):
        yield dsn, cli_for(tmp_path_factory.mktemp("regions_read"), dsn)


@pytest.fixture(scope="module")
def seeded(module_db):
    dsn, cli = module_db
    assert cli("url", "add", "http://plain.example/").returncode == 0
    added = cli("url", "add", "http://multi.example/", "--regions", "a,b,c")
    assert added.returncode == 0, added.stderr
    conn = psycopg2.connect(dsn)
    ensure_past_partitions(conn, 1)
    with conn.cursor() as cur:
        cur.execute("SELECT url, id FROM url")
        ids = dict(cur.fetchall())
        plain, multi = ids["http://plain.example/"], ids["http://multi.example/"]
        cur.execute("UPDATE url SET created_at = now() - interval '1 day', next_check_at = now() + interval '1 h'")
        cur.execute("""
            INSERT INTO task_result (url_id, scheduled_at, started_at, response_time_ms, status_code, ok,
                                     error_kind, error, checked_by, region)
            SELECT %(plain)s, now() - i * interval '1 min', now(), 50, 200, true, NULL, NULL, 't', ''
            FROM generate_series(1, 20) i
            UNION ALL
            SELECT %(multi)s, now() - i * interval '1 min', now(), NULL, NULL, false, 'connect', 'connection refused',
                   't', 'a' FROM generate_series(1, 20) i
            UNION ALL
            SELECT %(multi)s, now() - i * interval '1 min', now(), 10 * i, 200, true, NULL, NULL, 't', 'b'
            FROM generate_series(1, 20) i
            UNION ALL
            SELECT %(multi)s, now() - i * interval '1 min', now(), 300, 200, true, NULL, NULL, 't', 'c'
            FROM generate_series(1, 20) i""", {"plain": plain, "multi": multi})
        # The alerts' state as the result path would have left it (the rows were inserted directly).
        cur.execute("UPDATE url_state SET state = 'up', since = now() - interval '20 min' WHERE url_id = %s", (plain,))
        cur.execute("UPDATE url_state SET state = 'partial', since = now() - interval '18 min' WHERE url_id = %s",
                    (multi,))
        cur.execute("""
            INSERT INTO url_region_state (url_id, region, state, since, fail_streak, ok_streak,
                                          last_error_kind, last_error)
            VALUES (%(m)s, 'a', 'down', now() - interval '18 min', 20, 0, 'connect', 'connection refused'),
                   (%(m)s, 'b', 'up', now() - interval '20 min', 0, 20, 'status', 'an old failure'),
                   (%(m)s, 'c', 'up', now() - interval '20 min', 0, 20, NULL, NULL)""", {"m": multi})
        cur.execute("""INSERT INTO region_host (owner, region, seen_at) VALUES
                           ('ha:notifier:1', 'a', now()), ('hb:notifier:1', 'b', now()),
                           ('hc:notifier:1', 'c', now() - interval '1 hour')""")
        cur.execute("INSERT INTO region_absence (region, since) VALUES ('c', now() - interval '1 hour')")
    conn.commit()
    conn.close()
    return {"plain": plain, "multi": multi}


@pytest.fixture(scope="module")
def web(module_db, seeded, tmp_path_factory):
    server = WebServer(tmp_path_factory.mktemp("web"), module_db[0])
    yield server
    server.stop()


EVERY = {"uptime_24h": 1.0, "uptime_7d": 1.0, "uptime_30d": 1.0}
NEVER = {"uptime_24h": 0.0, "uptime_7d": 0.0, "uptime_30d": 0.0}
EXPECTED_REGIONS = {
    "a": {"state": "down", "last_error_kind": "connect", "last_error": "connection refused", **NEVER},
    "b": {"state": "up", "last_error_kind": None, "last_error": None, **EVERY},     # its old failure is over
    "c": {"state": "absent", "last_error_kind": None, "last_error": None, **EVERY},
}


def without_since(regions: dict) -> dict:
    return {name: {k: v for k, v in r.items() if k not in ("since", "p95_ms_24h")} for name, r in regions.items()}


# --- status ------------------------------------------------------------------------------------------

def test_status_json_has_a_regions_map_only_for_urls_with_regions(module_db, seeded):
    done = module_db[1]("status", "--json")
    assert done.returncode == 0, done.stderr
    rows = {row["url"]: row for row in json.loads(done.stdout)}
    multi, plain = rows["http://multi.example/"], rows["http://plain.example/"]
    assert multi["state"] == "partial"
    # each slot once, by the quorum rule (majority): never down; every region's result: 66.666%
    assert {k: multi[k] for k in EVERY} == EVERY
    assert {k: plain[k] for k in EVERY} == EVERY
    assert list(multi["regions"]) == ["a", "b", "c"]                   # the URL's order of regions
    assert without_since(multi["regions"]) == EXPECTED_REGIONS
    assert multi["regions"]["a"]["since"] is not None and multi["regions"]["c"]["since"] is not None
    assert "regions" not in plain


def test_status_table_says_partial_and_down_from_which_regions(module_db, seeded):
    done = module_db[1]("status")
    assert done.returncode == 0, done.stderr
    multi = next(line for line in done.stdout.splitlines() if line.startswith("http://multi.example/"))
    plain = next(line for line in done.stdout.splitlines() if line.startswith("http://plain.example/"))
    assert re.match(r"http://multi\.example/ +partial ", multi)
    assert re.match(r"http://multi\.example/ +partial +\S+ \S+ +100\.000% +100\.000% +100\.000% ", multi), multi
    # the LAST ERROR column starts with what the regions say
    assert re.search(r"\S  down from a; absent c(; |$)", multi), multi
    assert "down from" not in plain and "absent" not in plain


def test_both_status_paths_give_the_same_regions(module_db, seeded):
    """The summary's SQL lines and the Python fallback (the first minutes of each hour)."""
    conn = psycopg2.connect(module_db[0])
    try:
        report.configure_session(conn)
        fallback = report.with_regions(conn, report.lines_of(report.status_rows(conn, None), True), None, True)
        by_url = {json.loads(line)["url"]: json.loads(line) for _, _, line in fallback}
        assert without_since(by_url["http://multi.example/"]["regions"]) == EXPECTED_REGIONS
        assert "regions" not in by_url["http://plain.example/"]
        one = report.with_regions(conn, report.lines_of(report.status_rows(conn, [seeded["multi"]]), False),
                                  [seeded["multi"]], False)
        assert re.search(r"\S  down from a; absent c(; |$)", one[0][2]), one
        assert re.search(r" 100\.000% +100\.000% +100\.000% ", one[0][2]), one
        # down_when any: a down in every slot makes every slot down; the regions' own are the same
        strict = report.with_regions(conn, report.lines_of(report.status_rows(conn, [seeded["multi"]]), True),
                                     [seeded["multi"]], True, "any")
        row = json.loads(strict[0][2])
        assert {k: row[k] for k in NEVER} == NEVER
        assert without_since(row["regions"]) == EXPECTED_REGIONS
    finally:
        conn.close()


# --- history -----------------------------------------------------------------------------------------

def test_history_has_a_region_column_and_filters_by_region(module_db, seeded):
    cli = module_db[1]
    every = list(csv.DictReader(io.StringIO(cli("history", "http://multi.example/", "--since", "1h").stdout)))
    assert sorted({row["region"] for row in every}) == ["a", "b", "c"]
    assert len(every) == 60
    only_b = cli("history", "http://multi.example/", "--since", "1h", "--region", "b", "--format", "json")
    assert only_b.returncode == 0, only_b.stderr
    rows = [json.loads(line) for line in only_b.stdout.splitlines()]
    assert len(rows) == 20 and {row["region"] for row in rows} == {"b"}
    assert sorted(row["response_time_ms"] for row in rows) == [10.0 * i for i in range(1, 21)]
    plain = list(csv.DictReader(io.StringIO(cli("history", "http://plain.example/", "--since", "1h").stdout)))
    assert len(plain) == 20 and {row["region"] for row in plain} == {""}


@pytest.mark.parametrize("region", ["", "Not A Region", "a,b"])
def test_history_refuses_a_bad_region(module_db, seeded, region):
    done = module_db[1]("history", "http://multi.example/", "--region", region)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "--region" in done.stderr


# --- web and API -------------------------------------------------------------------------------------

def test_the_summary_counts_partial_on_its_own(web, seeded):
    summary = web.get("/api/v1/summary").json()
    assert (summary["partial"], summary["up"], summary["down"], summary["unknown"]) == (1, 1, 0, 0)
    page = web.get("/").text
    assert re.search(r'<span class="muted">partial</span><b style="color: var\(--partial\)">1</b>', page)
    listed = web.get("/api/v1/urls?state=partial").json()
    assert [item["id"] for item in listed["items"]] == [seeded["multi"]] and listed["total"] == 1


def test_the_url_page_has_a_row_per_region(web, seeded):
    page = web.get(f"/urls/{seeded['multi']}").text
    rows = re.findall(r'<tr data-region="([^"]+)"><td>[^<]+</td><td><span class="state (\w+)"[^>]*>\w+</span></td>\s*'
                      r'<td[^>]*>[^<]*</td>\s*<td class="num">([^<]*)</td>\s*<td class="num">([^<]*)</td>\s*'
                      r'<td>(.*?)</td></tr>', page, re.S)
    assert [(region, state, up, p95) for region, state, up, p95, _ in rows] == [
        ("a", "down", "0.00%", "–"), ("b", "up", "100.00%", "190 ms"), ("c", "absent", "100.00%", "300 ms")]
    assert "connection refused" in rows[0][4] and "an old failure" not in rows[1][4]
    # the URL's own uptime: each slot once, by the quorum rule
    assert re.search(r'<span class="muted">uptime 24 h</span><b>100\.00%</b>', page), page
    assert 'id="regions"' not in web.get(f"/urls/{seeded['plain']}").text


def test_the_api_carries_each_region(web, seeded):
    body = web.get(f"/api/v1/urls/{seeded['multi']}").json()
    assert body["state"] == "partial"
    assert (body["uptime_24h"], body["uptime_7d"], body["uptime_30d"]) == (1.0, 1.0, 1.0)     # the quorum's
    assert without_since(body["regions"]) == EXPECTED_REGIONS
    assert {name: r["p95_ms_24h"] for name, r in body["regions"].items()} == {"a": None, "b": 190.0, "c": 300.0}
    assert "regions" not in web.get(f"/api/v1/urls/{seeded['plain']}").json()


def test_a_maintenance_window_still_shows_as_such_with_the_regions(module_db, seeded):
    cli = module_db[1]
    start = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M")
    added = cli("maintenance", "add", "http://multi.example/", "--start", start, "--duration", "1h", "--tz", "UTC")
    assert added.returncode == 0, added.stderr
    windows = json.loads(cli("maintenance", "list", "--json").stdout)
    try:
        rows = {row["url"]: row for row in json.loads(cli("status", "--json").stdout)}
        assert rows["http://multi.example/"]["state"] == "maintenance"
        assert without_since(rows["http://multi.example/"]["regions"]) == EXPECTED_REGIONS
        table = cli("status").stdout
        assert re.search(r"http://multi\.example/ +maintenance .*\S  down from a; absent c", table), table
    finally:
        for window in windows:
            assert cli("maintenance", "remove", str(window["id"])).returncode == 0
