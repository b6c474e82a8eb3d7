"""`sitewatch status` and `sitewatch history` as a user runs them (issue 9, test 9): every
column, --json, CSV that a CSV parser reads back, raw and hourly sources, exit codes."""

import csv
import datetime
import io
import json

import psycopg2
import pytest

from sitewatch.history import report, uptime
from tests.conftest import _fresh_database, cli_for
from tests.historydata import ensure_past_partitions

TRICKY = 'status 503, "Service Unavailable"; retry\tlater'


@pytest.fixture(scope="module")
def module_db(pg_base_dsn, template_db, tmp_path_factory):
    """One database for the module: its tests only read what `populated` puts there."""
    for dsn in _fresh_database(pg_base_dsn, "sitewatch_h", template_db):
        yield dsn, cli_for(tmp_path_factory.mktemp("history"), dsn)


@pytest.fixture(scope="module")
def cli(module_db):
    return module_db[1]


@pytest.fixture(scope="module")
def populated(module_db):
    dsn, cli = module_db
    for url in ("https://up.example/", "http://down.example/", "http://quiet.example/"):
        assert cli("url", "add", url).returncode == 0
    conn = psycopg2.connect(dsn)
    ensure_past_partitions(conn, 3)
    with conn.cursor() as cur:
        cur.execute("SELECT url, id FROM url")
        ids = dict(cur.fetchall())
        cur.execute("UPDATE url SET created_at = now() - interval '4 days', next_check_at = now() + interval '1 h'")
        # up: every 5 min for 3 days, one failure an hour ago; down: failing for the last 2 hours.
        cur.execute("""
            INSERT INTO task_result (url_id, scheduled_at, started_at, response_time_ms, status_code, ok,
                                     error_kind, error, cert_days_left, checked_by)
            SELECT %(up)s, t, t, 100, 200, true, NULL, NULL, 42, 'test'
            FROM generate_series(now() - interval '3 days', now() - interval '1 minute', interval '5 min') t""",
                    {"up": ids["https://up.example/"]})
        cur.execute("""
            UPDATE task_result SET ok = false, status_code = 503, error_kind = 'status', error = %s
            WHERE url_id = %s AND scheduled_at = (SELECT max(scheduled_at) FROM task_result
                                                  WHERE url_id = %s AND scheduled_at < now() - interval '1 hour')""",
                    (TRICKY, ids["https://up.example/"], ids["https://up.example/"]))
        cur.execute("""
            INSERT INTO task_result (url_id, scheduled_at, started_at, ok, error_kind, error, checked_by)
            SELECT %s, t, t, false, 'connect', 'connection refused', 'test'
            FROM generate_series(now() - interval '2 hours', now() - interval '1 minute', interval '1 min') t""",
                    (ids["http://down.example/"],))
        # The alerts' state, as the result writes would have left it (these rows were inserted
        # directly): up since its second good slot 3 days ago (one failure is below the
        # threshold), down since the first failure of its streak 2 hours ago.
        cur.execute("""UPDATE url_state s SET state = v.state, since = v.since,
                                              last_slot = now() - interval '1 minute'
                       FROM (VALUES (%s, 'up', now() - interval '3 days' + interval '5 min'),
                                    (%s, 'down', now() - interval '2 hours')) AS v (url_id, state, since)
                       WHERE s.url_id = v.url_id""",
                    (ids["https://up.example/"], ids["http://down.example/"]))
    conn.commit()
    conn.close()
    # Raw results kept 1 day: the older days are rolled up, then their partitions dropped.
    done = cli("db", "maintain", env={"SITEWATCH_HISTORY__RAW_DAYS": "1"})
    assert done.returncode == 0, done.stderr
    assert "partitions_dropped=2" in done.stdout
    return ids


def test_status_json_has_every_field(cli, populated):
    out = cli("status", "--json")
    assert out.returncode == 0, out.stderr
    rows = {row["url"]: row for row in json.loads(out.stdout)}
    assert set(rows) == {"https://up.example/", "http://down.example/", "http://quiet.example/"}
    for row in rows.values():
        assert list(row) == list(report.STATUS_FIELDS)
    up, down, quiet = rows["https://up.example/"], rows["http://down.example/"], rows["http://quiet.example/"]
    assert up["state"] == "up" and down["state"] == "down" and quiet["state"] == "unknown"
    assert 0.99 < up["uptime_24h"] < 1.0 and up["uptime_7d"] < 1.0 and up["uptime_30d"] < 1.0
    assert down["uptime_24h"] == 0.0
    assert quiet["uptime_24h"] is None and quiet["uptime_30d"] is None and quiet["since"] is None
    assert abs(up["coverage_24h"] - 0.2) < 0.01             # every 5 minutes of a 60 s period
    assert 90 <= up["p95_ms_24h"] <= 110 and down["p95_ms_24h"] is None
    assert up["cert_days_left"] == 42 and up["last_error_kind"] is None
    assert down["last_error_kind"] == "connect" and down["last_error"] == "connection refused"
    since = datetime.datetime.fromisoformat(down["since"])
    assert datetime.datetime.now(datetime.timezone.utc) - since > datetime.timedelta(minutes=110)
    since = datetime.datetime.fromisoformat(up["since"])                # from url_state
    assert datetime.timedelta(days=2, hours=23) < datetime.datetime.now(datetime.timezone.utc) - since


def test_status_table_down_and_one_url(cli, populated):
    out = cli("status")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:3] == ["URL", "STATE", "SINCE"] and len(lines) == 4
    down_line = next(line for line in lines if line.startswith("http://down.example/"))
    assert " down " in down_line and "0.000%" in down_line and "connect: connection refused" in down_line
    up_line = next(line for line in lines if line.startswith("https://up.example/"))
    up = next(row for row in json.loads(cli("status", "--json").stdout) if row["url"] == "https://up.example/")
    for key in ("uptime_24h", "uptime_7d", "uptime_30d"):
        assert f" {uptime.format_percent(up[key])} " in up_line
    # Coverage is about 20% (a result every 5 minutes, 60 s period); its exact value depends on
    # where in the hour the test runs, so compare with the JSON's figure, as the table shows it.
    coverage = f" {int(up['coverage_24h'] * 100)}% "
    assert f" {up['p95_ms_24h']:.0f}ms " in up_line and " 42d " in up_line and coverage in up_line
    assert coverage in (" 19% ", " 20% ")
    only_down = cli("status", "--down", "--json")
    assert [row["url"] for row in json.loads(only_down.stdout)] == ["http://down.example/"]

    one = cli("status", "HTTPS://UP.example:443/")          # any spelling of the URL
    assert one.returncode == 0, one.stderr
    text = one.stdout.splitlines()
    bar = text[text.index(next(line for line in text if line.startswith("last 24 h"))) + 1]
    assert len(bar) == 24 and set(bar) <= set("█▒░·") and "▒" in bar
    assert any("last 10 failures" in line for line in text)
    assert any("status" in line and "Service Unavailable" in line for line in text)


def test_status_unknown_url_exits_2(cli, populated):
    out = cli("status", "http://nobody.example/")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "not monitored" in out.stderr


def test_history_csv_reads_back_with_raw_and_hourly_rows(cli, populated):
    out = cli("history", "https://up.example/", "--since", "3d")
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert list(rows[0]) == list(report.HISTORY_COLUMNS)
    sources = [row["source"] for row in rows]
    assert "hourly" in sources and "raw" in sources
    assert sources == sorted(sources)                       # hourly (older) first, then raw
    failed = [row for row in rows if row["ok"] == "false" and row["source"] == "raw"]
    assert [row["error"] for row in failed] == [TRICKY]     # quotes, comma and tab survive
    assert failed[0]["status_code"] == "503" and failed[0]["error_kind"] == "status"
    hourly = next(row for row in rows if row["source"] == "hourly")
    assert hourly["ok"] == "true" and float(hourly["response_time_ms"]) == 100.0 and hourly["started_at"] == ""
    times = [datetime.datetime.fromisoformat(row["scheduled_at"]) for row in rows]
    assert times == sorted(times)


def test_history_json_lines_and_windows(cli, populated):
    out = cli("history", "http://down.example/", "--since", "90m", "--format", "json")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert 85 <= len(lines) <= 91
    for line in lines:
        row = json.loads(line)
        assert list(row) == list(report.HISTORY_COLUMNS)
        assert row["ok"] is False and row["source"] == "raw" and row["response_time_ms"] is None
    until = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
    bounded = cli("history", "http://down.example/", "--since", "2h", "--until", until.isoformat(),
                  "--format", "json")
    assert 55 <= len(bounded.stdout.splitlines()) <= 61


def test_history_exit_codes(cli, populated):
    empty = cli("history", "http://quiet.example/")
    assert (empty.returncode, empty.stdout, empty.stderr) == (0, "", "")
    unknown = cli("history", "http://nobody.example/")
    assert unknown.returncode == 2 and "not monitored" in unknown.stderr and unknown.stdout == ""
    for bad in (["--since", "7x"], ["--until", "yesterday"], ["--format", "xml"]):
        out = cli("history", "https://up.example/", *bad)
        assert out.returncode == 2 and out.stdout == "" and out.stderr.count("\n") == 1, bad
