"""Push (heartbeat) monitors, `push://NAME`: the job reports, sitewatch checks nothing.

A sibling of the other kinds under check/, though nothing is fetched: this module owns what a
push monitor is (its URL, token, grace and the meaning of each ping), not the SQL (db/push.sql)
or the web endpoint (web/ping.py).

Slots (following Healthchecks: a job that reports about once a period, give or take `grace`,
is up). A push monitor's slots are fixed-rate like any monitor's: t0, t0+P, t0+2P, ... from
when it was added. Each slot gets exactly one result:

* a ping settles the oldest slot with no result yet, if that slot has started: a ping in the
  slot it falls in, or one up to `grace` late for the slot before (a job that runs a little
  late, or whose schedule is not in phase with the slots, is not missed);
* a success ping that comes before that slot starts (the job reported twice in one period)
  records nothing: its slot already has its success;
* a failure ping (/fail, a non-zero /EXIT_CODE) is never dropped: it settles the oldest slot
  with no result, even when that slot starts later;
* a slot whose end plus `grace` passes with no ping is recorded failed, `error_kind = 'missed'`,
  by whichever host's producer gets there first (db/push.sql record_missed);
* /start opens a run: if no success or failure ping follows within `grace`, the run overran,
  and the oldest slot with no result is recorded `missed` at start + grace. Any later ping
  closes the run.

A monitor with a cron schedule (`--cron`) has its fire times as slots instead: pushcron.py.
"""

import hashlib
import re
import secrets

from ..errors import BadInput
from ..redact import printable, redact_text
from .engine import MAX_ERROR_CHARS, shorten  # the limits every stored error keeps (probe.Outcome)

SCHEME = "push"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
TOKEN_BYTES = 24                 # 192 random bits (the issue asks for at least 128)
TOKEN_FORM = re.compile(r"[A-Za-z0-9_-]{16,100}")      # what a token in a ping's path may look like
MAX_MESSAGE_BYTES = 10 * 1024    # a POST body kept as the result's message; more is refused (413)

# Default grace when --grace is not given: a fifth of the period, at least a minute and at most
# an hour. A job's run time and its scheduler's jitter grow with its period, but an hourly job
# should not go a whole extra hour unnoticed (Healthchecks' fixed default is an hour).
GRACE_SHARE = 0.2
MIN_DEFAULT_GRACE = 60
MAX_DEFAULT_GRACE = 3600
MAX_GRACE = 7 * 86400
# A job's period: a day unless given (Healthchecks' default too), up to 31 days. check.max_period
# does not apply: it bounds the load of checks, and a push monitor costs one row a period.
DEFAULT_PERIOD = 86400
MAX_PERIOD = 31 * 86400

# What a ping says: the path's last part.
START, SUCCESS, FAILURE = "start", "success", "failure"
ERROR_KIND_FAILED = "failed"     # the job reported failure (/fail, a non-zero exit code)
ERROR_KIND_MISSED = "missed"     # no success in time (no ping, or a /start run overran)

# Options of `url add` that only mean something to a check sitewatch makes itself.
CHECK_ONLY_OPTIONS = ("regex", "timeout", "method", "expected_status", "max_redirects", "verify_tls",
                      "assert", "degraded", "headers", "body", "json", "bearer", "client_cert", "client_key",
                      "ip_version")


# The url columns that are a push monitor's settings; its others keep their column defaults
# (`apply` compares these only, `url update` changes these only).
SETTINGS = ("url", "name", "period", "grace", "cron", "tz", "failure_threshold", "success_threshold", "notify")


def is_push(url) -> bool:
    return isinstance(url, str) and url[:7].lower() == "push://"


def normalise(url: str) -> str:
    """`push://NAME`, NAME being 1-100 letters, digits, '.', '_' or '-' (starting with a letter
    or digit); the scheme is lower-cased, the name kept as written."""
    name = url[len("push://"):] if is_push(url) else None
    if not name or not NAME.fullmatch(name):
        raise BadInput(f"a push monitor is push://NAME, NAME 1-100 letters, digits, '.', '_' or '-', "
                       f"got {printable(url)[:120]!r}")
    return f"{SCHEME}://{name}"


def validate_period(raw, min_period: int) -> int:
    """Seconds, or a duration (90s, 15m, 2h, 1d), from check.min_period to 31 days; None: a day."""
    from ..duration import seconds
    if raw is None:
        return DEFAULT_PERIOD
    value = seconds(raw)
    if not value.is_integer() or not min_period <= value <= MAX_PERIOD:
        raise BadInput(f"period of a push monitor must be whole seconds from {min_period} (check.min_period) "
                       f"to 31d, got {raw!r}")
    return int(value)


def default_grace(period: int) -> int:
    return int(min(MAX_DEFAULT_GRACE, max(MIN_DEFAULT_GRACE, period * GRACE_SHARE)))


def validate_grace(raw, period: int) -> int:
    """Whole seconds from 0 to a week; None: the default for the period."""
    from ..duration import seconds
    if raw is None:
        return default_grace(period)
    value = seconds(raw)
    if not 0 <= value <= MAX_GRACE:
        raise BadInput(f"grace must be from 0 to 7d, got {raw!r}")
    return int(round(value))


def check_options(options: dict) -> None:
    """Refuse the options a push monitor cannot use (given, not defaulted)."""
    for name in CHECK_ONLY_OPTIONS:
        if options.get(name) not in (None, [], ""):
            raise BadInput(f"{name.replace('_', '-')} is for monitors sitewatch checks; a push monitor "
                           f"is only pinged (options: --period or --cron/--tz, --grace, --name, thresholds, "
                           f"--notify)")


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> bytes:
    """What is stored and looked up: SHA-256 of the token (high-entropy: no salt, no slow hash)."""
    return hashlib.sha256(token.encode("ascii", "replace")).digest()


def token_hint(entry) -> str:
    """What a file-driven add (`url import`, `apply`) says of a new push monitor: its token is
    printed once, and a file-driven run has no one to print it to (a CI log is no place for it)."""
    name = entry.name or entry.url[len(SCHEME) + 3:]
    return f"{entry.shown}: no ping URL is printed here; `sitewatch url show-token {name}` issues one"


def ping_address(token: str, base_url: str | None) -> str:
    """The URL a job pings: under web.base_url when set, else the path alone."""
    path = f"/ping/{token}"
    return base_url.rstrip("/") + path if base_url else path


def parse_signal(text: str | None) -> tuple[str, int | None] | None:
    """The path's last part -> (kind, exit code): None (success), start, fail, or an exit code
    0-255 (0 is success). None when it is none of these."""
    if text is None:
        return SUCCESS, None
    if text == "start":
        return START, None
    if text == "fail":
        return FAILURE, None
    if text.isascii() and text.isdecimal() and len(text) <= 3 and int(text) <= 255:
        code = int(text)
        return (SUCCESS if code == 0 else FAILURE), code
    return None


def message(body: bytes) -> str | None:
    """A POST body as the result's message: UTF-8 (bad bytes replaced), URLs' secrets redacted,
    made printable as every stored error is (redact.printable); None when empty."""
    text = body.decode("utf-8", "replace").strip()
    return printable(redact_text(text)) if text else None


def failure_error(code: int | None, text: str | None) -> str:
    """The `error` of a failure ping: what the job said, cut like every error (probe.Outcome)."""
    said = "the job reported failure" if code is None else f"the job exited with code {code}"
    return shorten(f"{said}: {text}" if text else said, MAX_ERROR_CHARS)
