"""The web application: pages, JSON API (/api/v1/) and badges, on Starlette.

Handlers are plain functions (Starlette runs them on its thread pool): each takes
one connection from the read-only pool, asks data.py, and renders. Everything a
page needs is in the page: CSS inline, charts as inline SVG, one short script
(auto-refresh) allowed by its hash in the Content-Security-Policy, nothing external.
"""

import base64
import datetime
import hashlib
import json
import math
import os
import threading
import time

import psycopg2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from .. import __version__, logs, requestspec
from ..errors import DatabaseUnavailable
from ..manage import audit
from ..redact import printable, redact_url
from . import data, glance, params, regionrows, svg
from .auth import AUTH_FAILURES_PER_MINUTE, AuthMiddleware, parse_auth, parse_public
from .middleware import ResponseCache, SecurityHeaders
from .ping import PingEndpoint, ping_writer
from .pool import ReadOnlyPool, WritePool
from .ratelimit import RateLimiter, TooMany
from .tokens import parse as parse_tokens

PAGE_SIZE = 100                 # URLs per page of /
WRITE_POOL_SIZE = 2             # connections of the write API (writes are rare and short)
MAX_LIMIT = 500                 # largest page the API hands out
MAX_CHECKS = 1000
BAR_DAYS = 90
CACHE_SECONDS = 5.0             # a GET response is reused this long (ResponseCache)
BADGE_MAX_AGE = 60              # seconds badges may be cached (README images are proxied and cached)
PAGE_REFRESH_S = 60
STATES = ("up", "degraded", "partial", "down", "unknown")
DEEP_OFFSET = 1000              # an OFFSET from here on is expensive (web.rate_limit); `after` never is
# The only script on the pages: reload every minute while the page is visible.
REFRESH_SCRIPT = (f"setTimeout(function(){{if(document.visibilityState==='visible'){{location.reload()}}"
                  f"else{{document.addEventListener('visibilitychange',function(){{location.reload()}},"
                  f"{{once:true}})}}}},{PAGE_REFRESH_S * 1000});")
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(REFRESH_SCRIPT.encode()).digest()).decode()


# --- JSON ------------------------------------------------------------------------------------------

def _json_default(value):
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    return str(value)


class JSON(JSONResponse):
    def render(self, content) -> bytes:
        return json.dumps(content, default=_json_default, ensure_ascii=False, allow_nan=False).encode()


def url_item(row: dict, windows: dict) -> dict:
    """One URL as the API (and the pages) show it; names as in `sitewatch status --json`."""
    w = windows.get(row["id"], {})

    def up(name):
        return (w.get(name) or {}).get("uptime")
    return {
        "id": row["id"], "url": redact_url(row["url"]), "name": row.get("name"), "period": row["period"],
        "state": row["state"], "since": row["since"],
        "uptime_24h": up("24h"), "uptime_7d": up("7d"), "uptime_30d": up("30d"),
        "coverage_24h": (w.get("24h") or {}).get("coverage"), "p95_ms_24h": w.get("p95_ms_24h"),
        "last_check_at": row["last_started_at"], "last_ok": row["last_ok"],
        "last_status_code": row["last_status_code"], "last_response_time_ms": row["last_response_time_ms"],
        "last_error_kind": row["last_error_kind"] if row["last_ok"] is False else None,
        "last_error": _printable(row["last_error"]) if row["last_ok"] is False else None,
        "cert_days_left": row["last_cert_days_left"],
    }


def _printable(text: str | None) -> str | None:
    return None if text is None else printable(text)


def incident_item(row: dict) -> dict:
    return {"id": row["id"], "url_id": row["url_id"], "url": redact_url(row["url"]) if row["url"] else None,
            "started_at": row["started_at"], "ended_at": row["ended_at"],
            "duration_s": int(row["duration"].total_seconds()),
            # printable: rows stored before errors were made printable (the feed must stay XML)
            "first_error_kind": row["first_error_kind"], "first_error": _printable(row["first_error"]),
            "last_error_kind": row["last_error_kind"], "last_error": _printable(row["last_error"]),
            "failed_checks": row["failed_checks"]}


def _days_list(by_day: dict, days: int, today: datetime.date) -> list[tuple]:
    first = today - datetime.timedelta(days=days - 1)
    return [(d, *by_day.get(d, (0, 0))) for d in (first + datetime.timedelta(days=i) for i in range(days))]


# --- formatting for templates ----------------------------------------------------------------------

def fmt_time(value, period: int | None = None) -> str:
    """A time in UTC to the minute; to the second for a URL checked more than once a minute."""
    if value is None:
        return "–"
    shown = "%Y-%m-%d %H:%M:%S UTC" if period is not None and period < 60 else "%Y-%m-%d %H:%M UTC"
    return value.astimezone(datetime.timezone.utc).strftime(shown)


def fmt_duration(value) -> str:
    if value is None:
        return "–"
    seconds = int(value.total_seconds() if isinstance(value, datetime.timedelta) else value)
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{hours // 24} d {hours % 24} h"


def fmt_ago(value, now) -> str:
    return "–" if value is None else f"{fmt_duration(max(datetime.timedelta(0), now - value))} ago"


# --- the application -------------------------------------------------------------------------------

def create_app(cfg, dsn: str) -> Starlette:
    templates = Jinja2Templates(directory=os.path.join(os.path.dirname(__file__), "templates"))
    env = templates.env
    env.globals.update(version=__version__, refresh_script=REFRESH_SCRIPT)
    env.filters.update(pct=svg.pct, ms=svg.ms, time=fmt_time, duration=fmt_duration)
    env.globals["ago"] = fmt_ago
    pool = ReadOnlyPool(dsn, cfg.database.timeout)
    down_when = cfg.alerts.down_when      # a URL with regions: its uptime by the quorum rule
    feed_base = cfg.web.base_url.rstrip("/") + "/" if cfg.web.base_url else ""
    limiter = RateLimiter(cfg.web.rate_limit)
    for warning in cfg.warnings():
        logs.get().warning(warning)

    def expensive(request: Request) -> None:
        """Count a request the cache did not answer and that costs a scan: 429 past web.rate_limit."""
        limiter.take(request.client.host if request.client else "")
    summary_memo = {"at": -1e9, "value": None}
    summary_lock = threading.Lock()

    def summary(conn) -> dict:
        """The counts every page shows, computed at most once per CACHE_SECONDS (a scan of url_state)."""
        with summary_lock:
            if time.monotonic() - summary_memo["at"] < CACHE_SECONDS:
                return summary_memo["value"]
        value = data.summary(conn)
        with summary_lock:
            summary_memo.update(at=time.monotonic(), value=value)
        return value

    def page(request, name, context, status=200):
        return templates.TemplateResponse(request, name, context, status_code=status)

    # --- pages ---

    def index(request: Request):
        state = params.choice(request, "state", STATES)
        q = params.search(request)
        page_no = params.int_param(request, "page", 1, 1, 10 ** 6)
        if q is not None or (page_no - 1) * PAGE_SIZE >= DEEP_OFFSET:
            expensive(request)
        with pool.connection() as conn:
            totals = summary(conn)
            rows, total, _ = data.url_page(conn, state, q, PAGE_SIZE, (page_no - 1) * PAGE_SIZE, totals)
            windows = data.uptime_windows(conn, [r["id"] for r in rows], down_when=down_when)
            strips = glance.for_page(conn, rows)
        items = [url_item(r, windows) for r in rows]
        pages = max(1, math.ceil(total / PAGE_SIZE))
        return page(request, "index.html", {
            "summary": totals, "items": items, "strips": strips, "slots": glance.SLOTS,
            "total": total, "page": page_no, "pages": pages,
            "q": q or "", "state": state or "", "states": STATES, "now": totals["generated_at"],
            "query_for": lambda p: _query(q, state, p), "refresh": True})

    def url_page(request: Request):
        url_id = params.url_id(request)
        with pool.connection() as conn:
            row = data.url_one(conn, url_id)
            if row is None:
                raise params.NotFound(f"no URL with ID {url_id}")
            windows = data.uptime_windows(conn, [url_id], names=("24h", "7d", "30d", "90d"), down_when=down_when)
            hours = data.hourly(conn, url_id, 24)
            days = data.daily(conn, url_id, BAR_DAYS)
            recent = data.checks(conn, url_id, 50)
            incidents = [incident_item(i) for i in data.incidents(conn, url_id=url_id, limit=20)]
            cert = data.cert_days_left(conn, row)
            regions = regionrows.for_url(conn, url_id, row["db_now"], down_when)
        now = row["db_now"]
        start = now.replace(minute=0, second=0, microsecond=0) - datetime.timedelta(hours=23)
        bar_days = _days_list(days, BAR_DAYS, now.date())
        item = url_item(row, windows)
        return page(request, "url.html", {
            "u": item, "windows": windows[url_id], "cert_days_left": cert, "now": now,
            "daily_svg": svg.daily_bar(bar_days), "chart_svg": svg.response_chart(hours, start),
            "bar_first": bar_days[0][0], "checks": recent, "incidents": incidents, "regions": regions, "refresh": True})

    def incidents_page(request: Request):
        with pool.connection() as conn:
            # with the URL's period: times to the second for a URL checked more than once a minute
            open_rows = [{**incident_item(i), "period": i["period"]}
                         for i in data.incidents(conn, open_only=True, limit=500)]
            recent = [{**incident_item(i), "period": i["period"]}
                      for i in data.incidents(conn, open_only=False, limit=100)]
            now = summary(conn)["generated_at"]
        return page(request, "incidents.html", {"open": open_rows, "recent": recent, "now": now,
                                                "refresh": True})

    def incidents_atom(request: Request):
        with pool.connection() as conn:
            rows = [{**incident_item(i), "period": i["period"]} for i in data.incidents(conn, limit=50)]
            now = summary(conn)["generated_at"]
        rows.sort(key=lambda i: i["ended_at"] or i["started_at"], reverse=True)
        # Links from web.base_url, else relative to the feed: never from the request's Host
        # header, which the client chooses and the cache would then serve to everyone.
        body = templates.get_template("incidents.atom").render(items=rows, base=feed_base, now=now)
        return Response(body, media_type="application/atom+xml; charset=utf-8")

    # --- API ---

    def api_summary(request: Request):
        with pool.connection() as conn:
            return JSON(summary(conn))

    def api_urls(request: Request):
        state = params.choice(request, "state", STATES)
        q = params.search(request)
        limit = params.int_param(request, "limit", PAGE_SIZE, 1, MAX_LIMIT)
        offset = params.int_param(request, "offset", 0, 0, 10 ** 9)
        after = params.after(request)
        if after is not None and offset:
            raise params.BadParam("after and offset cannot be used together")
        if q is not None or offset >= DEEP_OFFSET:
            expensive(request)
        with pool.connection() as conn:
            try:
                rows, total, cursor = data.url_page(conn, state, q, limit, offset, summary(conn), after)
            except data.CursorGone as e:
                raise params.BadParam(f"after: {e}; start again from the first page") from None
            windows = data.uptime_windows(conn, [r["id"] for r in rows], down_when=down_when)
        return JSON({"total": total, "limit": limit, "offset": offset, "next_after": params.cursor_text(cursor),
                     "items": [url_item(r, windows) for r in rows]})

    def _one(conn, url_id):
        row = data.url_one(conn, url_id)
        if row is None:
            raise params.NotFound(f"no URL with ID {url_id}")
        return row

    def api_url(request: Request):
        url_id = params.url_id(request)
        with pool.connection() as conn:
            row = _one(conn, url_id)
            windows = data.uptime_windows(conn, [url_id], down_when=down_when)
            item = url_item(row, windows)
            item.update(created_at=row["created_at"], regex=row["regex"],
                        cert_days_left=data.cert_days_left(conn, row),
                        request=requestspec.shown_settings(row),     # secrets redacted
                        **regionrows.api_fields(regionrows.for_url(conn, url_id, row["db_now"], down_when)))
        return JSON(item)

    def api_checks(request: Request):
        url_id = params.url_id(request)
        limit = params.int_param(request, "limit", 100, 1, MAX_CHECKS)
        before = request.query_params.get("before") or None
        if before is not None:
            try:
                before = datetime.datetime.fromisoformat(before.replace("Z", "+00:00"))
            except ValueError:
                raise params.BadParam("before must be an ISO 8601 time, e.g. 2026-11-29T08:00:00+00:00") from None
            if before.tzinfo is None:
                before = before.replace(tzinfo=datetime.timezone.utc)
        with pool.connection() as conn:
            _one(conn, url_id)
            rows = data.checks(conn, url_id, limit, before)
        return JSON({"url_id": url_id, "items": rows,
                     "next_before": rows[-1]["scheduled_at"] if len(rows) == limit else None})

    def api_uptime(request: Request):
        url_id = params.url_id(request)
        names = [n.strip() for n in (request.query_params.get("windows") or "24h,7d,30d,90d").split(",")]
        unknown = [n for n in names if n not in data.WINDOWS]
        if unknown or not names:
            raise params.BadParam(f"windows must be a comma-separated list of {', '.join(data.WINDOWS)}")
        with pool.connection() as conn:
            _one(conn, url_id)
            figures = data.uptime_windows(conn, [url_id], names=tuple(dict.fromkeys(names)),
                                          down_when=down_when)[url_id]
        p95 = figures.pop("p95_ms_24h")
        return JSON({"url_id": url_id, "windows": figures, "p95_ms_24h": p95})

    def api_daily(request: Request):
        url_id = params.url_id(request)
        days = params.int_param(request, "days", BAR_DAYS, 1, 366)
        with pool.connection() as conn:
            row = _one(conn, url_id)
            by_day = data.daily(conn, url_id, days)
        out = [{"date": d, "ok": ok, "failed": failed,
                "uptime": data.figures(ok, failed, None)["uptime"]}
               for d, ok, failed in _days_list(by_day, days, row["db_now"].date())]
        return JSON({"url_id": url_id, "days": out})

    def api_incidents(request: Request):
        open_text = request.query_params.get("open")
        if open_text not in (None, "", "true", "false"):
            raise params.BadParam("open must be true or false")
        url_id = request.query_params.get("url_id") or None
        if url_id is not None:
            url_id = params.whole(url_id, 1, params.MAX_ID)
            if url_id is None:
                raise params.BadParam("url_id must be a URL's ID (a whole number)")
        limit = params.int_param(request, "limit", 100, 1, MAX_LIMIT)
        offset = params.int_param(request, "offset", 0, 0, 10 ** 9)
        if offset >= DEEP_OFFSET:
            expensive(request)
        with pool.connection() as conn:
            rows = data.incidents(conn, open_only=None if not open_text else open_text == "true",
                                  url_id=url_id, limit=limit, offset=offset)
        return JSON({"limit": limit, "offset": offset, "items": [incident_item(r) for r in rows]})

    def api_audit(request: Request):
        limit = params.int_param(request, "limit", PAGE_SIZE, 1, MAX_LIMIT)
        with pool.connection() as conn:
            return JSON({"limit": limit, "items": audit.rows(conn, limit)})    # redacted when written

    # --- badges ---

    def _badge(request: Request, make):
        url_id = params.url_id(request)
        with pool.connection() as conn:
            row = _one(conn, url_id)
            label, message, colour = make(conn, row)
        return Response(svg.badge(label, message, colour), media_type="image/svg+xml",
                        headers={"Cache-Control": f"public, max-age={BADGE_MAX_AGE}"})

    def badge_status(request: Request):
        return _badge(request, lambda conn, row: ("status", row["state"], svg.BADGE_COLOURS[row["state"]]))

    def badge_uptime(request: Request):
        def make(conn, row):
            uptime = data.uptime_windows(conn, [row["id"]], names=("30d",),
                                         down_when=down_when)[row["id"]]["30d"]["uptime"]
            colour = svg.BADGE_COLOURS["unknown"] if uptime is None else svg.BADGE_COLOURS[
                "up" if uptime >= 0.999 else "warn" if uptime >= 0.99 else "down"]
            return "uptime 30d", svg.pct(uptime), colour
        return _badge(request, make)

    def badge_response_time(request: Request):
        def make(conn, row):
            p95 = data.uptime_windows(conn, [row["id"]], names=("24h",))[row["id"]]["p95_ms_24h"]
            colour = svg.BADGE_COLOURS["unknown"] if p95 is None else svg.BADGE_COLOURS[
                "up" if p95 < 500 else "warn" if p95 < 2000 else "down"]
            return "p95 24h", svg.ms(p95), colour
        return _badge(request, make)

    routes = [
        Route("/", index), Route("/urls/{url_id}", url_page),
        Route("/incidents", incidents_page), Route("/incidents.atom", incidents_atom),
        Route("/api/v1/summary", api_summary), Route("/api/v1/urls", api_urls),
        Route("/api/v1/urls/{url_id}", api_url), Route("/api/v1/urls/{url_id}/checks", api_checks),
        Route("/api/v1/urls/{url_id}/uptime", api_uptime), Route("/api/v1/urls/{url_id}/daily", api_daily),
        Route("/api/v1/incidents", api_incidents), Route("/api/v1/audit", api_audit),
        Route("/badge/{url_id}/status.svg", badge_status),
        Route("/badge/{url_id}/uptime-30d.svg", badge_uptime),
        Route("/badge/{url_id}/response-time-24h.svg", badge_response_time),
    ]

    def error(request: Request, status: int, message: str, headers: dict | None = None):
        if request.url.path.startswith("/api/"):
            return JSON({"error": message}, status_code=status, headers=headers)
        if request.url.path.startswith("/badge/"):
            return Response(svg.badge("status", "not found" if status == 404 else "error",
                                      svg.BADGE_COLOURS["unknown"]),
                            status_code=status, media_type="image/svg+xml", headers={"Cache-Control": "no-store"})
        response = page(request, "error.html", {"status": status, "message": message}, status=status)
        response.headers.update(headers or {})
        return response

    def on_bad_param(request, exc):
        return error(request, 400, str(exc))

    def on_not_found(request, exc):
        return error(request, 404, str(exc) if isinstance(exc, params.NotFound) else "not found")

    def on_too_many(request, exc):
        return error(request, 429, str(exc), headers={"Retry-After": str(exc.retry_after)})

    def on_database(request, exc):
        message = str(exc) if isinstance(exc, DatabaseUnavailable) else "database unavailable"
        return error(request, 503, message)

    tokens = parse_tokens(cfg.web.tokens or {})
    write_pool = None
    if any(token.writes for token in tokens):      # the write API exists only with a write token
        from . import writes
        write_pool = WritePool(dsn, cfg.database.timeout, size=WRITE_POOL_SIZE)
        routes += writes.routes(cfg, write_pool)
    from . import openapi
    routes.append(Route("/api/v1/openapi.json", lambda request: JSON(openapi.document())))

    app = Starlette(routes=routes, exception_handlers={
        params.BadParam: on_bad_param, params.NotFound: on_not_found, 404: on_not_found, TooMany: on_too_many,
        DatabaseUnavailable: on_database, psycopg2.OperationalError: on_database})
    app.state.pool, app.state.write_pool = pool, write_pool
    app.add_middleware(ResponseCache, ttl=CACHE_SECONDS)
    # always: it also answers a write 404 while no write token is configured (auth.py)
    app.add_middleware(AuthMiddleware, access=parse_auth(cfg.web.auth), public=parse_public(cfg.web.public),
                       tokens=tokens, failures=RateLimiter(AUTH_FAILURES_PER_MINUTE))
    # outermost: on 401s too
    app.add_middleware(SecurityHeaders, frame_ancestors=cfg.web.frame_ancestors, script_hash=_SCRIPT_HASH)
    # outside everything: a push monitor's pings (no auth, no cache: web/ping.py)
    app.state.ping_writer = ping_writer(cfg, dsn)
    app.add_middleware(PingEndpoint, cfg=cfg, writer=app.state.ping_writer)
    return app


def _query(q, state, page_no) -> str:
    from urllib.parse import urlencode
    params = {k: v for k, v in (("q", q), ("state", state), ("page", page_no)) if v and v != 1}
    return "?" + urlencode(params) if params else "?"
