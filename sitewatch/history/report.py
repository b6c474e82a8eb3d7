"""The `sitewatch status` and `sitewatch history` commands: read-only reports on stdout."""

import concurrent.futures
import csv
import datetime
import json
import re
import sys

import orjson

from .. import duration
from ..errors import BadInput
from ..redact import printable, redact_url
from ..regions import state as regionstate
from ..regions.names import region_problem
from ..web.svg import pct
from . import histogram, partitions, regionuptime, summary, uptime, windows
from .rollup import QUERIES

HOUR = datetime.timedelta(hours=1)
_DURATION = re.compile(r"^(\d+)(s|m|h|d)$")     # a duration, not a time: whole units required
FAILURES_SHOWN = 10
HISTORY_COLUMNS = ("scheduled_at", "started_at", "response_time_ms", "status_code", "regex_matched", "ok",
                   "error_kind", "error", "cert_days_left", "degraded", "dns_ms", "connect_ms", "tls_ms",
                   "first_byte_ms", "message", "source", "region")
STATUS_FIELDS = ("url", "name", "state", "since", "uptime_24h", "uptime_7d", "uptime_30d", "coverage_24h",
                 "p95_ms_24h", "last_error_kind", "last_error", "cert_days_left", "degraded_24h")


def parse_duration(text: str, what: str) -> datetime.timedelta:
    """'90s', '15m', '2h', '7d' (DESIGN.md section 11)."""
    match = _DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise BadInput(f"{what}: {text!r} is not a duration like 90s, 15m, 2h or 7d")
    return datetime.timedelta(seconds=duration.seconds(text.strip()))


def parse_time(text: str, what: str, now: datetime.datetime) -> datetime.datetime:
    """A duration back from now ('7d'), or an ISO 8601 time (UTC when it has no offset)."""
    if _DURATION.match(text.strip()):
        return now - parse_duration(text, what)
    try:
        value = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadInput(f"{what}: {text!r} is neither a duration (7d) nor a time (2026-11-01T12:00:00Z)") from None
    return value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)


# --- status -------------------------------------------------------------------------------

STATUS_WINDOWS = ("24h", "7d", "30d")


def configure_session(conn) -> None:
    """Settings for the report queries, on each connection they use."""
    with conn.cursor() as cur:
        # Read-only reports over months of rollups may take longer than database.timeout.
        cur.execute("SET statement_timeout = '300s'")
        # Their big statements are simple scans and sums: compiling them (JIT) costs more
        # than it saves (0.1-0.2 s each at 100,000 URLs).
        cur.execute("SET jit = off")
        cur.execute("SET work_mem = '64MB'")     # sorts of 100,000 URLs' rows in memory, not on disk
        cur.execute("SET TIME ZONE 'UTC'")       # times print as UTC, as the README says
        cur.execute("SET extra_float_digits = 1")   # floats as text round-trip (status_lines' JSON)
    if not conn.autocommit:
        conn.commit()


# p95 per histogram bucket, as the Python path shows it: JSON (rounded to 0.1 ms) and table.
_P95_VALUES = [round(v, 1) for v in histogram.VALUES]
_P95_TEXTS = [f"{v:.0f}ms" for v in _P95_VALUES]
# Two connections already keep both cores busy: parallel workers would only contend.
_NO_WORKERS = "SET LOCAL max_parallel_workers_per_gather = 0"


def status_lines(conn, ids: list[int] | None, as_json: bool, down: bool = False,
                 connect=None) -> list[tuple[int, str, str]] | None:
    """[(url_id, monitor shown, line)] of the monitors with these ids (store.find_monitor; or
    of all; with `down`, only those down), in URL order, for print_status_lines: the line is a
    JSON object, or the table's columns after the monitor (its URL redacted, and its name).

    Computed by PostgreSQL in one statement (queries.sql status_lines) from the uptime
    summary: nothing per URL is left to Python but the redaction of its URL (the rules of
    redact.py, in one place). With connect() giving a second connection, each computes
    half of the URLs. None when the summary cannot answer exactly (not built yet, or the
    clock is in an hour the job has not rolled up yet: the first minutes of every hour);
    status_rows then computes the figures in Python, more slowly (tests compare the two).
    """
    ids = ids or None
    halves = connect is not None and ids is None and not conn.autocommit
    with conn.cursor() as cur:
        if halves:      # the other connection reads this transaction's snapshot
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cur.execute("SELECT pg_export_snapshot()")
            snapshot = cur.fetchone()[0]
            cur.execute(_NO_WORKERS)
        cur.execute(QUERIES["frontier"])
        hour_until, day_until, now, anchor, until = cur.fetchone()
        if not summary.current(anchor, hour_until, now):
            conn.rollback()
            return None
        sql = QUERIES["status_lines"].replace("{line}", QUERIES["status_line_json" if as_json else "status_line_table"])
        start = windows.window_bounds(now, "24h", hour_until, day_until)["start"]
        params = {"ids": ids or [], "all": ids is None, "down": down, "until_hint": until,
                  "now": now.timestamp(), "start_24h": start.timestamp(),
                  "p95_values": _P95_VALUES, "p95_texts": _P95_TEXTS, "id_from": 0, "id_to": 2 ** 63 - 1}
        if not halves:
            cur.execute(sql, params)
            rows = cur.fetchall()
        else:
            # All URLs: half of them (by id) on each of two connections at once, so that
            # PostgreSQL computes on two cores (about a second each at 100,000 URLs), in one
            # snapshot.
            cur.execute(QUERIES["median_url_id"])
            middle = cur.fetchone()[0] or 0
            other = connect()
            try:
                configure_session(other)
                with concurrent.futures.ThreadPoolExecutor(1) as pool:
                    theirs = pool.submit(_snapshot_rows, other, snapshot, sql, {**params, "id_from": middle})
                    cur.execute(sql, {**params, "id_to": middle})
                    rows = cur.fetchall() + theirs.result()
            finally:
                other.close()
    conn.rollback()
    # In code point order (Python's str order; the fallback's SQL sorts COLLATE "C" alike):
    # a sort here takes a tenth of what it takes in the statement, over its wide rows.
    rows.sort(key=_monitor_order)
    lines = []
    for url_id, url, name, line in rows:
        shown = redact_url(url)
        if as_json and shown != url:
            line = '{"url": ' + orjson.dumps(shown).decode() + line[line.index(', "name": '):]
        lines.append((url_id, shown if as_json else monitor_shown(shown, name), line))
    return lines


def _monitor_order(row: tuple) -> tuple:
    """(url, name) in code point order, an unnamed monitor first: status_urls' ORDER BY."""
    return row[1], row[2] is not None, row[2] or ""


def monitor_shown(url: str, name: str | None) -> str:
    """A monitor in the status table: its URL (redacted), and its name when it has one (one URL
    may be monitored under several names), as `url list` shows it."""
    return f"{url} ({name})" if name else url


def _snapshot_rows(conn, snapshot: str, sql: str, params: dict) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot,))
        cur.execute(_NO_WORKERS)
        cur.execute(sql, params)
        rows = cur.fetchall()
    conn.rollback()
    return rows


def status_rows(conn, ids: list[int] | None, connect=None) -> list[tuple[int, dict]]:
    """(url_id, {STATUS_FIELDS}) of the monitors with these ids, or of all of them, in URL order.

    For all URLs, with connect() giving a second connection, that connection reads the URL
    list, then the latest results and states, while this one reads the uptime counts and
    then computes the figures: PostgreSQL works on both at once, and Python works while
    the other statement runs (at 100,000 URLs each half takes about a second alone).
    """
    ids = ids or None
    if ids or connect is None:
        counts = uptime.read_counts(conn, ids, STATUS_WINDOWS, all_urls=ids is None)
        urls = _status_urls(conn, ids)
        figures = list(counts.plain_rows((url[0], url[2], url[3]) for url in urls))
        states, latest = _status_states(conn, urls, ids)
    else:
        other = connect()
        try:
            configure_session(other)
            with concurrent.futures.ThreadPoolExecutor(1) as pool:     # one worker: in turn
                urls_read = pool.submit(_status_urls, other, None)
                states_read = pool.submit(lambda: _status_states(other, urls_read.result(), None))
                counts = uptime.read_counts(conn, None, STATUS_WINDOWS, all_urls=True)
                urls = urls_read.result()
                figures = list(counts.plain_rows((url[0], url[2], url[3]) for url in urls))
                states, latest = states_read.result()
        finally:
            other.close()
    degraded = _degraded_24h(conn, ids)
    rows = []
    unknown, no_result = ("unknown", None), (None, None, None)
    for (url_id, url, _, _, name), (up_24h, up_7d, up_30d, coverage_24h, p95) in zip(urls, figures, strict=True):
        state, since = states.get(url_id, unknown)
        error_kind, error, cert = latest.get(url_id, no_result)
        rows.append((url_id, {
            "url": redact_url(url), "name": name, "state": state, "since": since, "uptime_24h": up_24h,
            "uptime_7d": up_7d, "uptime_30d": up_30d, "coverage_24h": coverage_24h,
            "p95_ms_24h": None if p95 is None else round(p95, 1),
            "last_error_kind": error_kind, "last_error": error, "cert_days_left": cert,
            "degraded_24h": degraded.get(url_id, 0.0 if up_24h is not None else None)}))
    return rows


def _degraded_24h(conn, ids: list[int] | None) -> dict[int, float]:
    """{id: fraction of its last 24 hours' results that were degraded}, for URLs that have any
    `degraded` expressions (the others have no degraded results)."""
    with conn.cursor() as cur:
        cur.execute(QUERIES["degraded_24h"], {"ids": ids or [], "all": ids is None})
        found = dict(cur.fetchall())
    if not conn.autocommit:
        conn.rollback()
    return found


def _status_urls(conn, ids: list[int] | None) -> list[tuple]:
    """(id, url, period, created_at epoch) of `ids`, or of all URLs, in URL order."""
    with conn.cursor() as cur:
        cur.execute(QUERIES["status_urls"], {"ids": ids or [], "all": ids is None})
        urls = cur.fetchall()
    if not conn.autocommit:
        conn.rollback()
    return urls


def _status_states(conn, urls: list[tuple], ids: list[int] | None) -> tuple[dict, dict]:
    """{id: (state, since)} and {id: (error_kind, error, cert_days_left)} of the latest
    result, for `urls` (all URLs when ids is None)."""
    with conn.cursor() as cur:
        latest = {}
        if ids is None:
            cur.execute(QUERIES["latest_results_recent"])
            latest = {row[0]: row[1:] for row in cur.fetchall()}
        missing = [url[0] for url in urls if url[0] not in latest]
        if missing:
            cur.execute(QUERIES["latest_results"], {"ids": missing})
            latest.update((row[0], row[1:]) for row in cur.fetchall())
        # url_state exists in every database `status` runs on (schema 2 on; an older one is
        # refused until `sitewatch db migrate`).
        cur.execute(QUERIES["url_state"], {"ids": ids or [], "all": ids is None})
        states = {url_id: (state, since) for url_id, state, since in cur.fetchall()}
    if not conn.autocommit:
        conn.rollback()
    return states, latest


def lines_of(rows: list[tuple[int, dict]], as_json: bool) -> list[tuple[int, str, str]]:
    """status_rows' rows as status_lines gives them, for print_status_lines."""
    if as_json:
        return [(url_id, row["url"], orjson.dumps(row, default=_jsonable).decode()) for url_id, row in rows]
    percent = uptime.format_percent
    lines = []
    for url_id, r in rows:
        since = r["since"].strftime("%Y-%m-%d %H:%M") if r["since"] else "-"
        coverage = "-" if r["coverage_24h"] is None else pct(r["coverage_24h"], digits=0)   # 29/100: 29%
        p95 = "-" if r["p95_ms_24h"] is None else f"{r['p95_ms_24h']:.0f}ms"
        cert = "-" if r["cert_days_left"] is None else f"{r['cert_days_left']}d"
        error = f"{r['last_error_kind']}: {printable(r['last_error'] or '')}" if r["last_error_kind"] else ""
        lines.append((url_id, monitor_shown(r["url"], r["name"]),
                      f"{r['state']:11} {since:16} {percent(r['uptime_24h']):>8} "
                      f"{percent(r['uptime_7d']):>8} {percent(r['uptime_30d']):>8} "
                      f"{coverage:>7} {p95:>8} {cert:>5}  {error}"))
    return lines


# The table's columns before LAST ERROR (status_line_table, lines_of): state, since (a time or
# -), then six right-aligned figures, then two spaces.
_BEFORE_ERROR = re.compile(r"\S+ +(?:-|\d{4}-\d\d-\d\d \d\d:\d\d) +(?:\S+ +){5}\S+  ")


def with_regions(conn, lines: list[tuple[int, str, str]], ids: list[int] | None,
                 as_json: bool, down_when: str = "majority") -> list[tuple[int, str, str]]:
    """Lines of URLs with regions given their regions: JSON gains "regions" (a map from region to
    its state, since, last error and uptime); the table's LAST ERROR column starts with what its
    regions say ("down from a, b; absent c; "). Their uptime columns are the URL's by the quorum
    rule, each slot once (regionuptime.py; `down_when` is alerts.down_when): the summary's count
    every region's result. Lines of URLs without regions are left as they are: one statement
    finds the URLs with regions, and an install without any pays only that."""
    found = regionstate.region_states(conn, ids)
    if not found:
        return lines
    figures = regionuptime.for_urls(conn, ids, down_when)
    out = []
    for url_id, shown, line in lines:
        regions = found.get(url_id)
        if regions is not None:
            line = _quorum_line(line, regions, figures.get(url_id, {}), as_json)
        out.append((url_id, shown, line))
    return out


# Where the table's three uptime columns are (status_line_table, lines_of): after the state
# (11 wide), the since (16) and a space each.
_UPTIME_COLUMNS = slice(29, 55)


def _quorum_line(line: str, regions: dict, figures: dict, as_json: bool) -> str:
    """One status line of a URL with regions: its uptime by the quorum rule, its regions."""
    quorum = regionuptime.uptimes(figures.get(regionuptime.QUORUM))
    if as_json:      # the line as written (status_line_json or lines_of), its uptimes replaced
        for key, value in quorum.items():
            line = re.sub(f'([,{{] ?)"{key}": ?[^,}}]+',
                          lambda m, k=key, v=value: f'{m[1]}"{k}": {orjson.dumps(v).decode()}', line, count=1)
        shown = {name: {**r, **regionuptime.uptimes(figures.get(name))}
                 for name, r in regionstate.jsonable(regions).items()}
        return line[:-1] + ', "regions": ' + orjson.dumps(shown).decode() + "}"
    percent = uptime.format_percent
    line = (line[:_UPTIME_COLUMNS.start] + " ".join(f"{percent(quorum[f'uptime_{w}']):>8}"
                                                    for w in regionuptime.WINDOWS)
            + line[_UPTIME_COLUMNS.stop:])
    said = regionstate.summary_text(regions)
    match = _BEFORE_ERROR.match(line) if said else None
    if match:
        rest = line[match.end():]
        line = line[:match.end()] + said + ("; " + rest if rest else "")
    return line


def print_status_lines(conn, lines: list[tuple[int, str, str]], as_json: bool, out=sys.stdout) -> None:
    """JSON: a list, one object a line, "url" first. Table: a header, then a line per URL.
    One write for all of it (not 100,000). One URL: its detail (print_detail) too."""
    if as_json:
        print("[\n" + ",\n".join(line for _, _, line in lines) + "\n]" if lines else "[]", file=out)
        return
    if not lines:
        print("no URLs to show", file=out)
        return
    width = min(60, max(len(url) for _, url, _ in lines))
    header = (f"{'URL':{width}} {'STATE':11} {'SINCE (UTC)':16} {'UP 24H':>8} {'UP 7D':>8} {'UP 30D':>8} "
              f"{'COV 24H':>7} {'P95 24H':>8} {'CERT':>5}  LAST ERROR")
    print("\n".join([header, *(f"{url:{width}} {rest}" for _, url, rest in lines)]), file=out)
    if len(lines) == 1:
        print_detail(conn, lines[0][0], out)


def print_detail(conn, url_id: int, out) -> None:
    """One URL: an hour-by-hour bar for the last 24 h and its last failures."""
    with conn.cursor() as cur:
        cur.execute(QUERIES["frontier"])
        hour_until, _, now, _, _ = cur.fetchone()
        start = windows.floor_time(now, HOUR) - 23 * HOUR
        cur.execute(QUERIES["hourly_bar"], {"id": url_id, "start": start, "hour_to": hour_until or start})
        hours = {}
        for bucket, ok, failed in cur.fetchall():
            a, b = hours.get(bucket, (0, 0))
            hours[bucket] = (a + ok, b + failed)
        cur.execute(QUERIES["last_failures"], {"id": url_id, "limit": FAILURES_SHOWN})
        failures = cur.fetchall()
    if not conn.autocommit:
        conn.rollback()
    cells = []
    for i in range(24):
        ok, failed = hours.get(start + i * HOUR, (0, 0))
        cells.append("·" if ok + failed == 0 else "█" if failed == 0 else "░" if ok == 0 else "▒")
    print(f"\nlast 24 h, one character per UTC hour from {start:%H:00} to now "
          f"(█ all up, ▒ some failed, ░ all failed, · no data):", file=out)
    print("".join(cells), file=out)
    print(f"\nlast {FAILURES_SHOWN} failures:" if failures else "\nno failures recorded", file=out)
    for scheduled_at, code, kind, error in failures:
        print(f"  {scheduled_at:%Y-%m-%d %H:%M:%S}  {kind or '-':14} {code if code is not None else '-':>4}  "
              f"{printable(error or '')}", file=out)


# --- history ------------------------------------------------------------------------------

def parse_region(text: str | None) -> str | None:
    """`history --region`: a region name (regions.py's rule), or None for every region."""
    if text is None:
        return None
    problem = region_problem(text.strip()) if text.strip() else "must not be empty"
    if problem:
        raise BadInput(f"--region: {problem}, got {text!r}")
    return text.strip()


def history_rows(conn, url_id: int, since, until, region: str | None = None):
    """Rows in HISTORY_COLUMNS order: hourly rollups for the time raw rows no longer cover, then raw.
    With `region`, only that region's results: its own hourly rollups (rollup_region_hour:
    checks and failures, no response times), then its raw rows."""
    with conn.cursor() as cur:
        parts = partitions.attached(cur)
        raw_from = None if not parts or parts[0]["lower"] is None else parts[0]["lower"]
        if raw_from is not None and since < raw_from and region is not None:
            cur.execute(QUERIES["region_hourly_history"], {"id": url_id, "region": region, "since": since,
                                                           "until": min(until, raw_from)})
            for bucket, checks, _ok, failed in cur.fetchall():
                yield (bucket, None, None, None, None, failed == 0, None,
                       None if failed == 0 else f"{failed} of {checks} checks failed", None, None,
                       None, None, None, None, None, "hourly", region)
        if raw_from is not None and since < raw_from and region is None:
            cur.execute(QUERIES["hourly_history"], {"id": url_id, "since": since, "until": min(until, raw_from)})
            for bucket, checks, _ok, failed, rt_count, rt_sum, cert in cur.fetchall():
                yield (bucket, None, None if not rt_count else round(rt_sum / rt_count, 3), None, None,
                       failed == 0, None,
                       None if failed == 0 else f"{failed} of {checks} checks failed", cert, None,
                       None, None, None, None, None, "hourly", None)
        cur.execute(QUERIES["raw_history"], {"id": url_id, "since": max(since, raw_from or since), "until": until,
                                             "region": region})
        for *row, row_region in cur:
            yield (*row, "raw", row_region)
    if not conn.autocommit:
        conn.rollback()


def print_history(rows, fmt: str, out=sys.stdout) -> None:
    """CSV (a header, then quoted as needed) or JSON lines; nothing at all when there are no rows."""
    writer = None
    for row in rows:
        if fmt == "json":
            out.write(json.dumps({k: _jsonable(v) for k, v in zip(HISTORY_COLUMNS, row, strict=True)}) + "\n")
            continue
        if writer is None:
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(HISTORY_COLUMNS)
        writer.writerow([_csv_value(v) for v in row])


# Cells a spreadsheet would read as a formula (OWASP, "CSV Injection"): errors quote what a
# site sent, so "=HYPERLINK(...)" or "@SUM(...)" must stay text. Such cells get a leading '.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_value(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        # No terminal escapes and no line break inside a cell (rows stored before errors were
        # made printable may hold them); tabs stay, quoted.
        text = "\t".join(printable(part) for part in value.split("\t"))
        return "'" + text if value.startswith(_FORMULA_START) else text
    return _jsonable(value)


def _jsonable(value):
    if isinstance(value, datetime.datetime):
        return value.astimezone(datetime.timezone.utc).isoformat()
    return value
