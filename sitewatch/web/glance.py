"""The list page's strip: each URL's last slots at a glance, oldest left, newest right.

A cell per slot: ok (green), failed (red), lost or missed (grey: the monitor's failure to check,
not the site's; missed = no result at all, a slot the producer skipped), degraded (amber: ok,
but a `degraded` assertion failed). Each cell has a title with its time, status and error; the error is the site's
text, untrusted: the template escapes it (Jinja autoescaping), nothing here marks it safe.

Slots are fixed-rate (t0 + k x period, queries.sql enqueue_due), so a gap of k periods between
two results is k - 1 missed slots; so are the periods since the last result, past the one still
being checked, and the periods before the first result while the URL existed.
"""

import datetime

from ..redact import printable
from .svg import ms

SLOTS = 30              # cells per URL: 30 x 100 URLs keeps the list page under 200 KB
ERROR_CHARS = 48        # of the error, in a cell's title (the row's last error shows 80)
# A cell's CSS class (base.html, td.glance i.X): one letter, as 3,000 cells make most of the page.
CLASSES = {"ok": "o", "failed": "f", "lost": "l", "missed": "m", "degraded": "d"}


def kind(result: dict) -> str:
    if result["ok"]:
        return "degraded" if result.get("degraded") else "ok"
    return "lost" if result["error_kind"] == "lost" else "failed"


def _when(at: datetime.datetime, period: int, today: datetime.date) -> str:
    at = at.astimezone(datetime.timezone.utc)
    shown = at.strftime("%H:%M:%S" if period < 60 else "%H:%M")
    return shown if at.date() == today else f"{at:%Y-%m-%d} {shown}"


def _title(result: dict, period: int, today: datetime.date) -> str:
    when = _when(result["scheduled_at"], period, today)
    what = kind(result)
    if what == "ok":
        parts = [str(result["status_code"])] if result["status_code"] is not None else []
        if result["response_time_ms"] is not None:
            parts.append(ms(result["response_time_ms"]))
        return f"{when} ok {' '.join(parts)}".rstrip()
    error = printable(result["error"] or "")
    if what == "degraded":
        return f"{when} degraded: {error[:ERROR_CHARS]}".rstrip(": ")
    error = printable(result["error"] or "")
    if len(error) > ERROR_CHARS:
        error = error[:ERROR_CHARS - 1] + "…"
    if what == "lost":
        return f"{when} lost (not checked): {error}".rstrip(": ")
    status = f" {result['status_code']}" if result["status_code"] is not None else ""
    return f"{when} failed{status} {result['error_kind'] or ''}: {error}".rstrip(": ")


def _cell(kind_: str, title: str) -> dict:
    return {"kind": kind_, "cls": CLASSES[kind_], "title": title}


def _missed(at: datetime.datetime, period: int, today: datetime.date) -> dict:
    return _cell("missed", f"{_when(at, period, today)} missed: no check recorded")


def cells(results: list[dict], period: int, now: datetime.datetime, created_at: datetime.datetime | None,
          slots: int = SLOTS) -> list[dict]:
    """[{"kind", "cls", "title"}] for a URL's last `slots` slots, oldest first (fewer for a new URL).

    results: its results in the window, oldest first (data.recent_results)."""
    if period <= 0:
        return []
    step = datetime.timedelta(seconds=period)
    today = now.astimezone(datetime.timezone.utc).date()
    start = now - step * (slots + 1)      # as data.STRIP_SQL: the newest slot may still be being checked
    if created_at is not None and created_at > start:
        start = created_at
    out: list[dict] = []
    if not results:
        # Nothing recorded in the window: every slot in it was missed (none, for a URL added just now).
        count = min(slots, max(0, int((now - start) / step) - 1))
        return [_missed(now - step * (count - i), period, today) for i in range(count)]
    first = results[0]["scheduled_at"]
    lead = max(0, int((first - start) / step))
    out += [_missed(first - step * (lead - i), period, today) for i in range(lead)]
    previous = None
    for result in results:
        at = result["scheduled_at"]
        if previous is not None:
            gap = round((at - previous) / step) - 1
            out += [_missed(previous + step * (i + 1), period, today) for i in range(max(0, gap))]
        out.append(_cell(kind(result), _title(result, period, today)))
        previous = at
    # The slot after the last result may still be being checked; the ones after it were missed.
    tail = max(0, int((now - previous) / step) - 1)
    out += [_missed(previous + step * (i + 1), period, today) for i in range(tail)]
    return out[-slots:]


def for_page(conn, urls: list[dict], slots: int = SLOTS) -> dict[int, list[dict]]:
    """{url_id: cells} for a page of URLs (rows of data.url_page): one query."""
    from . import data
    results, now = data.recent_results(conn, urls, slots)
    return {u["id"]: cells(results[u["id"]], u["period"], now, u["created_at"], slots) for u in urls}
