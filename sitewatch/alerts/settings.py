"""What the alerts configuration means: durations, channels (Apprise URLs, secret), defaults.

Pure, like config.py: nothing here sends anything. Channel URLs hold secrets (tokens in the
path, passwords in the userinfo), so only their scheme is ever shown.
"""

import re

from ..duration import seconds as parse_duration
from ..errors import BadInput

CHANNEL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def redact_channel(url) -> str:
    """An Apprise URL as it may be shown: its scheme only (tokens sit in paths, hosts, users)."""
    scheme, sep, _ = str(url).partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]{0,31}", scheme):
        return "***"
    return f"{scheme}://***"


def redact_channels(value: dict) -> str:
    """alerts.channels as `config show` shows it: names and schemes."""
    return "{" + ", ".join(f"{name}: {redact_channel(url)}" for name, url in value.items()) + "}"


def channel_problem(name, url) -> str | None:
    """Why a channel entry is unusable, or None. Loads Apprise (slow-ish) only when channels are set."""
    if not isinstance(name, str) or not CHANNEL_NAME.fullmatch(name):
        return f"channel name {name!r} must be 1-64 letters, digits, '_', '.' or '-'"
    if not isinstance(url, str) or not url.strip():
        return f"channel {name!r} must be an Apprise URL (text), e.g. slack://..., mailto://..., json://..."
    import apprise
    if not apprise.Apprise().add(url):
        return f"channel {name!r} is not a valid Apprise URL: {redact_channel(url)}"
    return None


def check_channels(value) -> str | None:
    for name, url in value.items():
        problem = channel_problem(name, url)
        if problem:
            return problem
    return None


def check_default_channels(value) -> str | None:
    for name in value:
        if not isinstance(name, str) or not CHANNEL_NAME.fullmatch(name):
            return f"must be a list of channel names, got {name!r}"
    return None


def check_duration(value) -> str | None:
    try:
        parse_duration(value)
    except BadInput as e:
        return str(e)
    return None


def default_channels(cfg) -> list[str]:
    """Channels for URLs without --notify: alerts.default_channels, unset = every channel."""
    if cfg.alerts.default_channels is None:
        return sorted(cfg.alerts.channels)
    return list(cfg.alerts.default_channels)


def alert_defaults(cfg) -> dict:
    """The parameters complete_tasks passes to alert_apply_results for URLs without overrides."""
    return {"failure_threshold": cfg.alerts.failure_threshold,
            "success_threshold": cfg.alerts.success_threshold,
            "channels": default_channels(cfg),
            "notify_degraded": cfg.alerts.notify_degraded,
            "down_when": cfg.alerts.down_when}


def parse_notify(raw) -> list[str] | None:
    """--notify NAME,NAME (or a YAML list): channel names; '' or None means the defaults."""
    if raw is None:
        return None
    names = raw if isinstance(raw, list) else str(raw).split(",")
    names = [str(n).strip() for n in names if str(n).strip()]
    for name in names:
        if not CHANNEL_NAME.fullmatch(name):
            raise BadInput(f"notify: channel name {name!r} must be letters, digits, '_', '.' or '-'")
    return names or None
