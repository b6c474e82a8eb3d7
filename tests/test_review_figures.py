"""Issue 24, items A4, A5 and D17: control bytes in stored errors, formulas in the CSV export,
and uptime/coverage percentages shown a unit low (float truncation)."""

import csv
import datetime
import io
import json
import xml.etree.ElementTree as ET
from urllib.parse import quote

import pytest

from sitewatch import redact
from sitewatch.check.probe import MAX_ERROR_CHARS, Outcome, Target, check
from sitewatch.history import report, uptime
from sitewatch.history.rollup import QUERIES
from sitewatch.web import svg

# --- D17: percentages from exact arithmetic ----------------------------------------------------------


def _expected_pct(units: int) -> str:
    """units of 0.001 % (a truncated uptime fraction of 5 decimals) shown truncated to 0.01 %."""
    return f"{units // 1000}.{units // 10 % 100:02d}%"


def test_every_truncated_uptime_shows_its_own_percent():
    # 29/100 showed 28.99% and 0.9984 showed 99.83% (1,175 of the 100,001 values were wrong).
    assert svg.pct(uptime.truncated_ratio(29, 100)) == "29.00%"
    assert svg.pct(0.9984) == "99.84%"
    wrong = [k for k in range(100_001) if svg.pct(k / 100_000) != _expected_pct(k)]
    assert wrong == []


def test_percent_of_a_raw_ratio_is_truncated_never_rounded_up():
    assert svg.pct(249_999 / 250_000) == "99.99%"
    assert svg.pct(2 / 3) == "66.66%"
    assert svg.pct(1.0) == "100.00%" and svg.pct(0.0) == "0.00%"
    assert svg.pct(0.29, digits=0) == "29%"


def test_daily_bar_shows_the_exact_day_figure():
    bar = svg.daily_bar([(datetime.date(2026, 11, 1), 29, 71)])
    assert "29.00% (29 of 100 checks ok)" in bar


def test_status_table_coverage_is_exact_in_python():
    row = {"url": "http://a.example/", "name": None, "state": "up", "since": None, "uptime_24h": 0.29,
           "uptime_7d": None, "uptime_30d": None, "coverage_24h": 29 / 100, "p95_ms_24h": None, "last_error_kind": None,
           "last_error": None, "cert_days_left": None}
    (_, _, line), = report.lines_of([(1, row)], as_json=False)
    assert " 29% " in line and "29.000%" in line


def test_status_table_coverage_is_exact_in_sql(db):
    """The status_line_table block of queries.sql, on every (results, expected) up to 300."""
    sql = f"""
        SELECT f.results, f.expected, {QUERIES["status_line_table"]}
        FROM (SELECT r AS results, e AS expected, 'https://a.example/'::text AS url,
                     NULL::bigint AS units_24h, NULL::bigint AS units_7d,
                     NULL::bigint AS units_30d, NULL::integer AS p95_bucket
              FROM generate_series(1, 300) e, generate_series(0, e) r) f,
             (SELECT 'up'::text AS state, NULL::timestamptz AS since) st,
             (SELECT NULL::text AS error_kind, NULL::text AS error, NULL::integer AS cert_days_left) l,
             (SELECT NULL::text AS error_kind, NULL::text AS error, NULL::integer AS cert_days_left) old"""
    with db.cursor() as cur:
        cur.execute(sql, {"p95_texts": []})
        rows = cur.fetchall()
    assert len(rows) == sum(e + 1 for e in range(1, 301))
    wrong = [(r, e, line) for r, e, line in rows if line.split()[5] != f"{r * 100 // e}%"]
    assert wrong == []


def test_status_table_sql_line_has_no_control_characters(db):
    """The status_line_table block (the path `status` takes while the uptime summary is current)."""
    with db.cursor() as cur:
        cur.execute(f"""
            SELECT {QUERIES["status_line_table"]}
            FROM (SELECT 1 AS results, 1 AS expected, 'https://a.example/'::text AS url,
                     NULL::bigint AS units_24h, NULL::bigint AS units_7d,
                         NULL::bigint AS units_30d, NULL::integer AS p95_bucket) f,
                 (SELECT 'down'::text AS state, NULL::timestamptz AS since) st,
                 (SELECT 'redirects'::text AS error_kind, %(error)s::text AS error, NULL::integer AS cert_days_left) l,
                 (SELECT NULL::text AS error_kind, NULL::text AS error, NULL::integer AS cert_days_left) old""",
                    {"p95_texts": [], "error": OLD_ERROR})
        line = cur.fetchone()[0]
    assert line.endswith("redirects: invalid redirect Location http://x/ [2J ]0;owned   "), repr(line)


# --- A5: no live formulas in the CSV export -----------------------------------------------------------

FORMULAS = ["=HYPERLINK(\"http://evil.example/\",\"x\")", "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)",
            "\t=1", "\r=1"]


def test_csv_export_neutralises_formulas():
    t = datetime.datetime(2026, 11, 1, tzinfo=datetime.timezone.utc)
    rows = [(t, t, None, 500, None, False, "status", text, -3, "raw") for text in FORMULAS]
    rows.append((t, t, 12.5, 200, True, True, None, "plain error", 42, "raw"))
    out = io.StringIO()
    report.print_history(iter(rows), "csv", out)
    parsed = list(csv.reader(io.StringIO(out.getvalue())))
    assert parsed[0] == list(report.HISTORY_COLUMNS)
    errors = [line[report.HISTORY_COLUMNS.index("error")] for line in parsed[1:]]
    # OWASP: a leading quote; and no line break inside a cell (A4: old rows may hold them)
    assert errors == ["'" + text.replace("\r", " ") for text in FORMULAS] + ["plain error"]
    # numbers stay numbers (a negative cert_days_left is a number, not a formula)
    assert [line[report.HISTORY_COLUMNS.index("cert_days_left")] for line in parsed[1:]] == ["-3"] * 6 + ["42"]


def test_json_export_keeps_the_text_as_it_is():
    t = datetime.datetime(2026, 11, 1, tzinfo=datetime.timezone.utc)
    out = io.StringIO()
    row = (t, t, None, 500, None, False, "status", "=1+1", None, False, None, None, None, None, None, "raw", "")
    report.print_history(iter([row]), "json", out)
    assert '"error": "=1+1"' in out.getvalue()


# --- A4: control characters never reach a stored error ------------------------------------------------

HOSTILE_TEXT = "a\x1b[31mred\x1b[0m\x07\x00\x08\x7f\x85\u202e\ufffe\udc80z\r\nnext\tline"


def _is_clean(text: str) -> bool:
    return all(ch.isprintable() for ch in text)


def test_printable_escapes_control_characters():
    shown = redact.printable(HOSTILE_TEXT)
    assert _is_clean(shown)
    assert shown == "a\\x1b[31mred\\x1b[0m\\x07\\x00\\x08\\x7f \\u202e\\ufffe\\udc80z  next line"
    assert redact.printable("plain text, café ☃") == "plain text, café ☃"
    assert redact.printable(shown) == shown


def test_every_outcome_error_is_printable_and_short():
    now = datetime.datetime.now(datetime.timezone.utc)
    outcome = Outcome(started_at=now, response_time_ms=None, status_code=None, regex_matched=None, ok=False,
                      error_kind="lost", error=HOSTILE_TEXT * 100, cert_days_left=None)
    assert _is_clean(outcome.error) and len(outcome.error) <= MAX_ERROR_CHARS
    assert Outcome(now, None, None, None, True, None, None, None).error is None


@pytest.mark.parametrize("location", ["http://[\x1b[2J\x1b[31m\x01", "/next\x1b]0;pwned\x07\x0b\x1b[31m"])
def test_a_redirect_location_with_control_bytes_is_stored_escaped(hostile_server, location):
    outcome = check(Target(hostile_server.url("/redirect-to?" + quote(location)), max_redirects=0, timeout=5))
    assert outcome.error_kind == "redirects", outcome
    assert _is_clean(outcome.error), outcome.error
    assert "\\x1b" in outcome.error


def test_escaped_errors_are_xml_text():
    """Errors go into the Atom feed (Jinja escapes markup, not control characters): XML text only."""
    error = Outcome(datetime.datetime.now(datetime.timezone.utc), None, None, None, False, "redirects",
                    "invalid redirect Location http://[\x1b[31m\x01\x0c\ufffe", None).error
    ET.fromstring(f"<summary>{error}</summary>")


OLD_ERROR = "invalid redirect Location http://x/\x1b[2J\x1b]0;owned\x07\x01\x0c"


@pytest.fixture
def stored_before_the_fix(dsn, db):
    """A URL whose latest (failed) result was stored raw, as before errors were made printable."""
    with db.cursor() as cur:
        cur.execute("INSERT INTO url (url, period, timeout, next_check_at, created_at) "
                    "VALUES ('http://old.example/', 60, 10, now() + interval '1 hour', now() - interval '1 day') "
                    "RETURNING id")
        url_id = cur.fetchone()[0]
        cur.execute("INSERT INTO task_result (url_id, scheduled_at, started_at, ok, error_kind, error, checked_by) "
                    "SELECT %s, t, t, false, 'redirects', %s, 'test' "
                    "FROM generate_series(now() - interval '10 minutes', now() - interval '1 minute', "
                    "interval '1 minute') t", (url_id, OLD_ERROR))
    return url_id


@pytest.mark.parametrize("maintain", [False, True], ids=["python", "summary"])
def test_status_never_prints_control_characters_of_old_rows(cli, stored_before_the_fix, maintain):
    if maintain:     # builds the uptime summary: status then computes its lines in SQL (when current)
        assert cli("db", "maintain").returncode == 0
    for args in (["status"], ["status", "http://old.example/"]):
        out = cli(*args)
        assert out.returncode == 0, out.stderr
        assert "redirects: invalid redirect Location http://x/" in out.stdout
        assert all(ch.isprintable() or ch == "\n" for ch in out.stdout), repr(out.stdout)
    as_json = json.loads(cli("status", "--json").stdout)
    assert as_json[0]["last_error"] == OLD_ERROR              # JSON escapes it; the text is kept


def test_atom_feed_stays_well_formed_with_old_rows(dsn, db, stored_before_the_fix, web_factory):
    with db.cursor() as cur:
        cur.execute("INSERT INTO incident (url_id, url, started_at, first_error_kind, first_error, "
                    "last_error_kind, last_error, failed_checks) "
                    "VALUES (%s, 'http://old.example/', now() - interval '10 minutes', 'redirects', %s, "
                    "'redirects', %s, 10)", (stored_before_the_fix, OLD_ERROR, OLD_ERROR))
    web = web_factory(dsn)
    feed = ET.fromstring(web.get("/incidents.atom").content)
    summaries = [e.text for e in feed.iter("{http://www.w3.org/2005/Atom}summary")]
    assert len(summaries) == 1 and "invalid redirect Location http://x/" in summaries[0]
    assert "\x1b" not in web.get("/incidents").text and "\x1b" not in web.get("/").text
