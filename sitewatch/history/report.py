"""The `sitewatch status` and `sitewatch history` commands: read-only reports on stdout."""

import csv
import datetime
import json
import re
import sys

from .. import duration
from ..errors import BadInput
from ..redact import redact_url
from . import partitions, uptime
from .rollup import QUERIES

HOUR = datetime.timedelta(hours=1)
_DURATION = re.compile(r"^(\d+)(s|m|h|d)$")     # a duration, not a time: whole units required
FAILURES_SHOWN = 10
HISTORY_COLUMNS = ("scheduled_at", "started_at", "response_time_ms", "status_code", "regex_matched", "ok",
                   "error_kind", "error", "cert_days_left", "source")
STATUS_FIELDS = ("url", "state", "since", "uptime_24h", "uptime_7d", "uptime_30d", "coverage_24h",
                 "p95_ms_24h", "last_error_kind", "last_error", "cert_days_left")


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


def resolve_urls(conn, urls: list[str] | None) -> list[tuple[int, str]]:
    """(id, url) of the URLs named (normalised as at add time), or of all; BadInput for unknown ones."""
    from ..urlspec import normalise_url
    names = [normalise_url(u) for u in urls] if urls else None
    with conn.cursor() as cur:
        cur.execute(QUERIES["urls_by_name"], {"urls": names})
        rows = cur.fetchall()
    if names:
        unknown = sorted(set(names) - {url for _, url in rows})
        if unknown:
            raise BadInput(f"not monitored: {', '.join(redact_url(u) for u in unknown)}")
    return rows


# --- status -------------------------------------------------------------------------------

def status_rows(conn, urls: list[tuple[int, str]], all_urls: bool = False) -> list[dict]:
    """One dict per URL with STATUS_FIELDS (JSON-ready apart from datetimes)."""
    ids = [url_id for url_id, _ in urls]
    figures = uptime.for_urls(conn, ids, windows=("24h", "7d", "30d"), all_urls=all_urls)
    with conn.cursor() as cur:
        latest = {}
        if all_urls:
            cur.execute(QUERIES["latest_results_recent"])
            latest = {row[0]: row[1:] for row in cur.fetchall()}
        missing = [url_id for url_id in ids if url_id not in latest]
        if missing:
            cur.execute(QUERIES["latest_results"], {"ids": missing})
            latest.update((row[0], row[1:]) for row in cur.fetchall())
        # url_state exists in every database `status` runs on (schema 2 on; an older one is
        # refused until `sitewatch db migrate`).
        cur.execute(QUERIES["url_state"], {"ids": [] if all_urls else ids, "all": all_urls})
        states = {url_id: (state, since) for url_id, state, since in cur.fetchall()}
    if not conn.autocommit:
        conn.rollback()
    rows = []
    for url_id, url in urls:
        f = figures[url_id]
        state, since = states.get(url_id, ("unknown", None))
        _, _, error_kind, error, cert = latest.get(url_id, (None, None, None, None, None))
        rows.append({"url": redact_url(url), "state": state, "since": since,
                     "uptime_24h": f.windows["24h"].uptime, "uptime_7d": f.windows["7d"].uptime,
                     "uptime_30d": f.windows["30d"].uptime, "coverage_24h": f.windows["24h"].coverage,
                     "p95_ms_24h": None if f.p95_ms_24h is None else round(f.p95_ms_24h, 1),
                     "last_error_kind": error_kind, "last_error": error, "cert_days_left": cert,
                     "_id": url_id})
    return rows


def print_status(conn, rows: list[dict], as_json: bool, out=sys.stdout) -> None:
    if as_json:
        # A list with one object per line: json.dumps(indent=...) takes the pure-Python
        # encoder, four times slower at 100,000 URLs.
        encode = json.JSONEncoder(default=_jsonable).encode      # one encoder, not one per row
        lines = ",\n".join(encode({k: r[k] for k in STATUS_FIELDS}) for r in rows)
        print(f"[\n{lines}\n]" if rows else "[]", file=out)
        return
    if not rows:
        print("no URLs to show", file=out)
        return
    width = min(60, max(len(r["url"]) for r in rows))
    print(f"{'URL':{width}} {'STATE':7} {'SINCE (UTC)':16} {'UP 24H':>8} {'UP 7D':>8} {'UP 30D':>8} "
          f"{'COV 24H':>7} {'P95 24H':>8} {'CERT':>5}  LAST ERROR", file=out)
    for r in rows:
        since = r["since"].strftime("%Y-%m-%d %H:%M") if r["since"] else "-"
        coverage = "-" if r["coverage_24h"] is None else f"{int(r['coverage_24h'] * 100)}%"
        p95 = "-" if r["p95_ms_24h"] is None else f"{r['p95_ms_24h']:.0f}ms"
        cert = "-" if r["cert_days_left"] is None else f"{r['cert_days_left']}d"
        error = f"{r['last_error_kind']}: {r['last_error']}" if r["last_error_kind"] else ""
        print(f"{r['url']:{width}} {r['state']:7} {since:16} {uptime.format_percent(r['uptime_24h']):>8} "
              f"{uptime.format_percent(r['uptime_7d']):>8} {uptime.format_percent(r['uptime_30d']):>8} "
              f"{coverage:>7} {p95:>8} {cert:>5}  {error}", file=out)
    if len(rows) == 1:
        print_detail(conn, rows[0]["_id"], out)


def print_detail(conn, url_id: int, out) -> None:
    """One URL: an hour-by-hour bar for the last 24 h and its last failures."""
    with conn.cursor() as cur:
        cur.execute(QUERIES["frontier"])
        hour_until, _, now, _, _ = cur.fetchone()
        start = uptime._floor(now, HOUR) - 23 * HOUR
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
              f"{error or ''}", file=out)


# --- history ------------------------------------------------------------------------------

def history_rows(conn, url_id: int, since, until):
    """Rows in HISTORY_COLUMNS order: hourly rollups for the time raw rows no longer cover, then raw."""
    with conn.cursor() as cur:
        parts = partitions.attached(cur)
        raw_from = None if not parts or parts[0]["lower"] is None else parts[0]["lower"]
        if raw_from is not None and since < raw_from:
            cur.execute(QUERIES["hourly_history"], {"id": url_id, "since": since, "until": min(until, raw_from)})
            for bucket, checks, _ok, failed, rt_count, rt_sum, cert in cur.fetchall():
                yield (bucket, None, None if not rt_count else round(rt_sum / rt_count, 3), None, None,
                       failed == 0, None,
                       None if failed == 0 else f"{failed} of {checks} checks failed", cert, "hourly")
        cur.execute(QUERIES["raw_history"], {"id": url_id, "since": max(since, raw_from or since), "until": until})
        for row in cur:
            yield (*row, "raw")
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


def _csv_value(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return _jsonable(value)


def _jsonable(value):
    if isinstance(value, datetime.datetime):
        return value.astimezone(datetime.timezone.utc).isoformat()
    return value
