"""Charts and badges drawn as SVG on the server: no script, no external asset.

Page charts carry CSS classes (the page's stylesheet colours them, dark mode
included); badges are standalone files and carry their own colours.
"""

import datetime
from decimal import ROUND_CEILING, ROUND_DOWN, Decimal
from html import escape


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def pct(fraction: float | None, digits: int = 2) -> str:
    """99.995% shows as 99.99%: truncated, never rounded up (100% means no failure at all).

    Exact: the float's shortest decimal form (repr: 0.29, not 0.28999999999999998) is cut in
    decimal arithmetic, so an uptime that history truncated to 0.001% (29/100 = 0.29) shows
    as itself, 29.00%, and a raw ratio (2/3) is cut, never rounded.
    """
    if fraction is None:
        return "–"
    value = (Decimal(repr(float(fraction))) * 100).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_DOWN)
    return f"{value}%"


def ms(value: float | None) -> str:
    """A response time: 0.4 ms and 9.5 ms (a fast site's times are not all '0 ms'), 231 ms, 1.25 s."""
    if value is None:
        return "–"
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    if value < 9.95:
        return f"{value:.1f} ms"
    return f"{value:.0f} ms"


def day_class(ok: int, failed: int) -> str:
    if ok + failed == 0:
        return "none"
    uptime = ok / (ok + failed)
    return "ok" if uptime >= 0.999 else "warn" if uptime >= 0.99 else "bad"


def daily_bar(days: list[tuple[datetime.date, int, int]], height: int = 34) -> str:
    """One bar per day, oldest left; hover (title) gives the day's uptime and counts."""
    step, width = 6, 4
    total = len(days) * step
    parts = [f'<svg class="daily" role="img" aria-label="daily uptime, {len(days)} days" '
             f'viewBox="0 0 {total} {height}" preserveAspectRatio="none" width="100%" height="{height}">']
    for i, (day, ok, failed) in enumerate(days):
        counted = ok + failed
        figure = f"{pct(ok / counted)} ({ok} of {counted} checks ok)" if counted else "no data"
        parts.append(f'<rect class="d-{day_class(ok, failed)}" x="{i * step}" y="0" width="{width}" '
                     f'height="{height}" rx="1"><title>{day.isoformat()}: {escape(figure)}</title></rect>')
    parts.append("</svg>")
    return "".join(parts)


def response_chart(hours: list[dict], start: datetime.datetime, width: int = 720, height: int = 200) -> str:
    """p50 and p95 per hour over 24 hours from `start`, as two lines with dots (hover: the figures)."""
    left, right, top, bottom = 52, 10, 10, 24
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [h[k] for h in hours for k in ("p50_ms", "p95_ms") if h[k] is not None]
    ticks = axis_ticks(max(values) if values else 100)
    top_ms = ticks[-1][0]
    by_hour = {h["hour"]: h for h in hours}

    def x(i):
        return left + plot_w * (i + 0.5) / 24

    def y(value):
        return top + plot_h * (1 - value / top_ms)

    parts = [f'<svg class="chart" role="img" aria-label="response time, last 24 hours" '
             f'viewBox="0 0 {width} {height}" width="100%">']
    for value, label in ticks:
        gy = y(value)
        parts.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{_num(gy)}" y2="{_num(gy)}"/>'
                     f'<text class="axis" x="{left - 6}" y="{_num(gy + 4)}" text-anchor="end">'
                     f'{escape(label)}</text>')
    for i in range(0, 24, 3):
        hour = start + datetime.timedelta(hours=i)
        parts.append(f'<text class="axis" x="{_num(x(i))}" y="{height - 6}" text-anchor="middle">'
                     f'{hour:%H}:00</text>')
    for key, cls in (("p95_ms", "p95"), ("p50_ms", "p50")):
        points, dots = [], []
        for i in range(24):
            h = by_hour.get(start + datetime.timedelta(hours=i))
            if h is None or h[key] is None:
                if len(points) > 1:
                    dots.append(f'<polyline class="{cls}" points="{" ".join(points)}"/>')
                points = []
                continue
            px, py = _num(x(i)), _num(y(h[key]))
            points.append(f"{px},{py}")
            dots.append(f'<circle class="{cls}" cx="{px}" cy="{py}" r="3"><title>'
                        f'{(start + datetime.timedelta(hours=i)):%H}:00 UTC {cls}: {escape(ms(h[key]))}'
                        f'</title></circle>')
        if len(points) > 1:
            dots.append(f'<polyline class="{cls}" points="{" ".join(points)}"/>')
        parts.extend(dots)
    parts.append("</svg>")
    return "".join(parts)


def axis_ticks(max_ms: float, most: int = 5) -> list[tuple[float, str]]:
    """The value axis of a chart in ms: [(value, label)] from 0 up to the first tick at or above
    max_ms, with at most `most` steps. The step is 1, 2 or 5 x 10^k (the smallest that needs no
    more steps), and labels print as many decimals as the step needs, no more: 0.3 ms gives
    0, 0.1 .. 0.3 ms; 2 ms gives 0, 0.5, 1.0, 1.5, 2.0 ms; from a top of 1000 ms on, seconds
    (900 ms: 0, 0.2 .. 1.0 s; 12 s: 0, 5, 10, 15 s). Exact decimal arithmetic: no 0.30000000000000004.
    """
    top = Decimal(repr(float(max_ms))) if max_ms > 0 else Decimal(1)
    exponent = top.adjusted() - 1           # start one decade below the top's leading digit
    while True:
        for mantissa in (1, 2, 5):
            step = Decimal(mantissa).scaleb(exponent)
            steps = int((top / step).to_integral_value(rounding=ROUND_CEILING))
            if steps <= most:
                break
        else:
            exponent += 1
            continue
        break
    in_seconds = step * steps >= 1000
    shown_exp = exponent - 3 if in_seconds else exponent
    decimals = max(0, -shown_exp)
    unit = "s" if in_seconds else "ms"
    out = []
    for i in range(steps + 1):
        value = step * i
        shown = value / 1000 if in_seconds else value
        out.append((float(value), f"{shown:.{decimals if i else 0}f} {unit}"))
    return out


# --- Badges (shields.io look: two boxes, label on grey, message in colour) --------------------------

BADGE_COLOURS = {"up": "#2e9e44", "down": "#d93a3a", "unknown": "#8a8f98", "warn": "#d9901a",
                 "degraded": "#d9901a",   # amber: up, but a `degraded` assertion keeps failing
                 "maintenance": "#3b6fd9"}  # blue: a planned window, counted neither up nor down


def _text_width(text: str) -> int:
    # Verdana 11 px averages about 7 px a character; wide letters a bit more.
    return int(sum(8.5 if ch in "MW%@" else 4 if ch in "ilt.:, " else 7 for ch in text)) + 10


def badge(label: str, message: str, colour: str) -> str:
    lw, mw = _text_width(label), _text_width(message)
    w = lw + mw
    label_e, message_e = escape(label), escape(message)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="20" role="img" '
            f'aria-label="{label_e}: {message_e}"><title>{label_e}: {message_e}</title>'
            f'<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/>'
            f'<stop offset="1" stop-opacity=".1"/></linearGradient>'
            f'<clipPath id="r"><rect width="{w}" height="20" rx="3" fill="#fff"/></clipPath>'
            f'<g clip-path="url(#r)"><rect width="{lw}" height="20" fill="#555"/>'
            f'<rect x="{lw}" width="{mw}" height="20" fill="{colour}"/>'
            f'<rect width="{w}" height="20" fill="url(#s)"/></g>'
            f'<g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" '
            f'font-size="11"><text x="{lw / 2:.1f}" y="14">{label_e}</text>'
            f'<text x="{lw + mw / 2:.1f}" y="14">{message_e}</text></g></svg>')
