"""Short, human notices: what happened to which URL (credentials and query redacted), the error,
since when, how long it was down. Every message ends with its idempotency key, so a repeat
(delivery is at least once) can be recognised by a person or a receiving script.
"""

import datetime

from ..redact import redact_text, redact_url

MAX_ERROR = 300


def _when(value) -> str:
    if not value:
        return "?"
    if isinstance(value, str):
        value = datetime.datetime.fromisoformat(value)
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


def _error(detail) -> str:
    kind, text = detail.get("error_kind"), detail.get("error")
    text = redact_text(" ".join(str(text).split()))[:MAX_ERROR] if text else ""
    return f"{kind}: {text}" if kind and text else (kind or text or "unknown error")


def render(kind: str, detail: dict, key: str) -> tuple[str, str, str]:
    """(title, body, apprise notify type) of one notice."""
    url = redact_url(detail.get("url") or "")
    after = " (reported after a silence)" if detail.get("after_silence") else ""
    if kind == "down":
        title = f"DOWN: {url}"
        body = f"{url} is down since {_when(detail.get('since'))}{after}: {_error(detail)}."
        level = "failure"
    elif kind == "up":
        title = f"UP: {url}"
        body = (f"{url} is up again after {duration(detail.get('down_seconds'))} down "
                f"(since {_when(detail.get('since'))}, {detail.get('failed_checks')} failed checks){after}.")
        level = "success"
    elif kind == "reminder":
        title = f"STILL DOWN: {url}"
        body = (f"{url} is still down, since {_when(detail.get('since'))} "
                f"({detail.get('failed_checks')} failed checks): {_error(detail)}.")
        level = "failure"
    elif kind == "removed":
        title = f"NO LONGER MONITORED: {url}"
        body = (f"{url} was removed from monitoring while down (since {_when(detail.get('since'))}, "
                f"{detail.get('failed_checks')} failed checks; last error {_error(detail)}). Its incident "
                f"is closed without a recovery.")
        level = "info"
    elif kind == "cert_expiring":
        days = detail.get("days_left")
        title = f"CERTIFICATE EXPIRING: {url}"
        body = f"The TLS certificate of {url} expires in {days} day{'s' if days != 1 else ''}."
        level = "warning"
    elif kind == "flapping":
        if detail.get("flapping"):
            title = f"FLAPPING: {url}"
            body = (f"{url} keeps changing between up and down ({detail.get('percent')}% state changes over "
                    f"the last 21 checks). No more notices for it until it settles.")
            level = "warning"
        else:
            state = detail.get("state")
            title = f"SETTLED ({str(state).upper()}): {url}"
            body = f"{url} stopped flapping; it is {state} now."
            level = "success" if state == "up" else "failure" if state == "down" else "info"
    else:
        title, body, level = f"sitewatch: {kind}", str(detail), "info"
    return title, f"{body}\n[sitewatch {kind} {key}]", level
