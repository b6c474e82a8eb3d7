"""Short, human notices: what happened to which URL (credentials and query redacted), the error,
since when, how long it was down. Every message ends with its idempotency key, so a repeat
(delivery is at least once) can be recognised by a person or a receiving script.
"""

import datetime
import re

from ..redact import redact_text, redact_url

MAX_ERROR = 300

# A timestamp as PostgreSQL writes it into jsonb: trailing zeros of the fraction trimmed
# (`12:00:00.12345+00:00`), the offset of the session's TimeZone (`+05:30`, `-03`, and
# `+00:01:15` for old local mean times). Python 3.10's fromisoformat refuses most of these,
# so the parse is done here, the same on every Python.
_PG_TIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?"
                      r"(?:(Z)|([+-])(\d\d)(?::?(\d\d))?(?::?(\d\d))?)?")


def parse_time(text: str) -> datetime.datetime:
    """A jsonb timestamp (see _PG_TIME) as an aware datetime; ValueError if it is none."""
    found = _PG_TIME.fullmatch(text.strip())
    if not found:
        raise ValueError(f"not a timestamp: {text[:40]!r}")
    year, month, day, hour, minute, second, fraction, zulu, sign, oh, om, osec = found.groups()
    offset = datetime.timedelta(hours=int(oh or 0), minutes=int(om or 0), seconds=int(osec or 0))
    zone = datetime.timezone(-offset if sign == "-" else offset)
    return datetime.datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                             int((fraction or "0").ljust(6, "0")), tzinfo=zone)


def _when(value) -> str:
    if not value:
        return "?"
    if isinstance(value, str):
        try:
            value = parse_time(value)
        except ValueError:
            return "?"
    return value.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds) -> str:
    """3725 -> '1h 2m'; 42 -> '42s'."""
    seconds = int(round(float(seconds or 0)))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    parts = [p for p in parts if p][:2]
    return " ".join(parts) if parts else f"{secs}s"


# Bytes a site sent (a status line's reason, a Location) reach notices in error texts. Control
# and invisible formatting characters go; "@channel"-style words get a word joiner so no chat
# pings everyone; the text is quoted as code where the channel reads Markdown, and sent as
# plain text (Apprise escapes it for HTML, Slack and Markdown) everywhere else.
_INVISIBLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]")
_MENTION = re.compile(r"@(?=(?:channel|here|everyone|all|group)\b)", re.IGNORECASE)


def code(text: str) -> str:
    """text as one CommonMark code span: fenced by more backticks than any run inside it."""
    if not text:
        return text
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text[0] in "` " or text[-1] in "` " else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def site_text(text, markdown: bool, limit: int = MAX_ERROR) -> str:
    """Untrusted text from a site, made inert for the channel (see above), at most `limit` characters."""
    text = redact_text(" ".join(_INVISIBLE.sub(" ", str(text)).split()))[:limit]
    text = _MENTION.sub("@\u2060", text)
    return code(text) if markdown else text


def _error(detail, markdown: bool = False) -> str:
    kind, text = detail.get("error_kind"), detail.get("error")
    kind = " ".join(_INVISIBLE.sub(" ", str(kind)).split())[:40] if kind else ""
    text = site_text(text, markdown) if text else ""
    return f"{kind}: {text}" if kind and text else (kind or text or "unknown error")


def _regions(detail, markdown: bool) -> str:
    """' (down from eu, us; up from ap; first eu: timeout)' for a monitor with regions, else ''.
    Region names are validated when stored (sitewatch/regions/names.py): nothing to make inert."""
    down, up = detail.get("down_regions"), detail.get("up_regions")
    if down is None and up is None:
        return ""
    parts = [f"{state} from {', '.join(names)}" for state, names in (("down", down), ("up", up)) if names]
    first = detail.get("first_region")
    if first:
        region = (detail.get("regions") or {}).get(first) or {}
        parts.append(f"first {first}: {_error(region, markdown)}" if region.get("error_kind") or region.get("error")
                     else f"first {first}")
    return f" ({'; '.join(parts)})" if parts else ""


def render(kind: str, detail: dict, key: str, markdown: bool = False) -> tuple[str, str, str]:
    """(title, body, apprise notify type) of one notice; the body in CommonMark for a channel that
    reads it (Slack, Mattermost, Discord, ...), with the URL and the site's text as code."""
    url = redact_url(detail.get("url") or "")
    u = code(url) if markdown else url
    after = " (reported after a silence)" if detail.get("after_silence") else ""
    if kind == "down":
        title = f"DOWN: {url}"
        body = (f"{u} is down{_regions(detail, markdown)} since {_when(detail.get('since'))}{after}: "
                f"{_error(detail, markdown)}.")
        level = "failure"
    elif kind == "up":
        title = f"UP: {url}"
        body = (f"{u} is up again{_regions(detail, markdown)} after {duration(detail.get('down_seconds'))} down "
                f"(since {_when(detail.get('since'))}, {detail.get('failed_checks')} failed checks){after}.")
        level = "success"
    elif kind == "reminder":
        title = f"STILL DOWN: {url}"
        body = (f"{u} is still down, since {_when(detail.get('since'))} "
                f"({detail.get('failed_checks')} failed checks): {_error(detail, markdown)}.")
        level = "failure"
    elif kind == "removed":
        title = f"NO LONGER MONITORED: {url}"
        body = (f"{u} was removed from monitoring while down (since {_when(detail.get('since'))}, "
                f"{detail.get('failed_checks')} failed checks; last error {_error(detail, markdown)}). Its incident "
                f"is closed without a recovery.")
        level = "info"
    elif kind == "cert_expiring":
        days = detail.get("days_left")
        title = f"CERTIFICATE EXPIRING: {url}"
        body = f"The TLS certificate of {u} expires in {days} day{'s' if days != 1 else ''}."
        level = "warning"
    elif kind == "degraded":
        title = f"DEGRADED: {url}"
        body = (f"{u} is up but degraded since {_when(detail.get('since'))} "
                f"({detail.get('degraded_checks')} degraded checks){after}: {_error(detail, markdown)}.")
        level = "warning"
    elif kind == "recovered":
        title = f"RECOVERED: {url}"
        body = f"{u} is no longer degraded{after}."
        level = "success"
    elif kind == "region_absent":
        region = detail.get("region")
        title = f"REGION ABSENT: {region}"
        body = (f"No sitewatch host of region {region} has been seen since {_when(detail.get('since'))}: "
                f"checks from {region} are not running. URLs checked there leave it out of their count "
                f"until a host of it is back. A monitoring problem, not a site down.")
        level = "warning"
    elif kind == "flapping":
        if detail.get("flapping"):
            title = f"FLAPPING: {url}"
            body = (f"{u} keeps changing between up and down ({detail.get('percent')}% state changes over "
                    f"the last 21 checks). No more notices for it until it settles.")
            level = "warning"
        else:
            state = detail.get("state")
            title = f"SETTLED ({str(state).upper()}): {url}"
            body = f"{u} stopped flapping; it is {state} now."
            level = "success" if state == "up" else "failure" if state == "down" else "info"
    else:
        title, body, level = f"sitewatch: {kind}", site_text(str(detail), markdown), "info"
    return title, f"{body}\n[sitewatch {kind} {key}]", level
