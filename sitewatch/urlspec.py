"""What a user may register: URL, period, regex and check options, validated.

Everything here is pure. A refusal raises BadInput with one line that says why;
the CLI turns it into exit code 2 before anything is written.
"""

import re
from dataclasses import asdict, dataclass, field, fields
from urllib.parse import urlsplit, urlunsplit

import re2

from . import requestspec
from .alerts.settings import parse_notify
from .assertions import parse_all
from .check import kinds, push, pushcron
from .check.address import normalise_host
from .errors import BadInput
from .redact import redact_url
from .regex import compile_regex  # noqa: F401 - re-exported: check/probe.py and tests import it from here
from .regions.names import parse_down_when, parse_regions

MAX_URL_LENGTH = 2048
MAX_REGEX_LENGTH = 1000
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
DEFAULT_PORTS = {"http": 80, "https": 443}
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")


@dataclass(frozen=True)
class UrlEntry:
    """One monitored URL as stored in the `url` table."""

    url: str
    period: int
    regex: str | None
    timeout: float
    method: str
    expected_status: str
    max_redirects: int
    verify_tls: bool
    # Alerts overrides (None = the alerts.* default).
    failure_threshold: int | None = None
    success_threshold: int | None = None
    notify: list[str] | None = None      # channel names
    # `assert` and `degraded` expressions as written (DESIGN.md section 12), validated
    assertions: list[str] = field(default_factory=list)
    degraded: list[str] = field(default_factory=list)
    # Request options (requestspec.py); headers, bearer and body hold ${VAR} unexpanded.
    name: str | None = None              # the monitor's identity when given, else its URL
    headers: list[str] | None = None     # "Name: value"
    body: bytes | None = None
    body_json: bool = False              # the body is JSON: sent with Content-Type application/json
    bearer: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    ip_version: int | None = None        # 4, 6, None = any
    grace: int | None = None             # push:// monitors only: seconds a ping may be late (check/push.py)
    cron: str | None = None              # push:// only: a cron schedule instead of the period (check/pushcron.py)
    tz: str | None = None                # ...and the zone it is read in
    # Regions (DESIGN.md section 12): each slot is checked once in each ([] = by any one host);
    # down_when: how many must be down for the monitor to be (None = alerts.down_when).
    regions: list[str] = field(default_factory=list)
    down_when: str | None = None
    # A tcp:// monitor's `send` is stored in `body` (the bytes written), its `expect` in `regex`.

    def as_row(self) -> dict:
        return asdict(self)

    @property
    def identity(self) -> str:
        return self.name or self.url

    @property
    def shown(self) -> str:
        """How messages name the monitor: its name, else its URL redacted."""
        return self.name or redact_url(self.url)


# User-facing option names: the YAML key `assert` is stored as `assertions` (a Python keyword);
# `json` is read into body and body_json, and body_json itself is not an option.
# `send` and `expect` (tcp://) are read into body and regex.
OPTION_NAMES = ["assert" if f.name == "assertions" else f.name for f in fields(UrlEntry)
                if f.name != "body_json"] + ["json", "send", "expect"]


def normalise_url(raw) -> str:
    """Validate and normalise a URL: lower-case scheme and host, no default port, no fragment."""
    if not isinstance(raw, str):
        raise BadInput(f"URL must be text, got {type(raw).__name__}")
    if not raw:
        raise BadInput("URL is empty")
    if push.is_push(raw):           # a kind of its own: push://NAME (check/push.py)
        return push.normalise(raw)
    if len(raw) > MAX_URL_LENGTH:
        raise BadInput(f"URL is longer than {MAX_URL_LENGTH} characters ({len(raw)})")
    if not raw.isprintable() or " " in raw:     # one C-speed test; the loop only names the culprit
        for ch in raw:
            if ch.isspace() or not ch.isprintable():
                raise BadInput(f"URL contains whitespace or a control character ({ch!r})")
    scheme_match = _SCHEME.match(raw)
    scheme = scheme_match.group(1).lower() if scheme_match else ""
    if scheme not in DEFAULT_PORTS:     # another kind of monitor (tcp://, tls://...), or none
        return kinds.normalise(scheme, raw)
    if not raw[len(scheme) + 1:].startswith("//"):
        raise BadInput("URL must start with http:// or https://")
    try:
        parts = urlsplit(raw)
    except ValueError as e:
        raise BadInput(f"URL is malformed: {e}") from None
    if "\\" in parts.netloc:
        # urlsplit reads http://a.example\@b.example/ as host b.example, urllib3 (and browsers) as
        # a.example: the URL shown and the one checked would differ.
        raise BadInput("URL has a backslash before its path")
    try:
        port = parts.port
    except ValueError:
        raise BadInput("URL port must be a number between 1 and 65535") from None
    host = parts.hostname
    if not host:
        raise BadInput("URL has no host")
    if port == 0:
        raise BadInput("URL port must be between 1 and 65535, got 0")
    hostport = normalise_host(host)
    if port is not None and port != DEFAULT_PORTS[scheme]:
        hostport = f"{hostport}:{port}"
    userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
    netloc = f"{userinfo}@{hostport}" if userinfo else hostport
    url = urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))
    if len(url) > MAX_URL_LENGTH:    # IDNA encoding can lengthen a host name
        raise BadInput(f"URL is longer than {MAX_URL_LENGTH} characters once normalised ({len(url)})")
    return url


def validate_period(raw, min_period: int, max_period: int) -> int:
    """A whole number of seconds within [min_period, max_period]."""
    if isinstance(raw, bool):
        raw = repr(raw)
    if isinstance(raw, str):
        try:
            raw = int(raw.strip())
        except ValueError:
            raise BadInput(f"period must be a whole number of seconds, got {raw!r}") from None
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    if not isinstance(raw, int):
        raise BadInput(f"period must be a whole number of seconds, got {raw!r}")
    if raw < min_period or raw > max_period:
        raise BadInput(f"period must be between {min_period} and {max_period} seconds "
                       f"(check.min_period, check.max_period), got {raw}")
    return raw


def validate_regex(raw) -> str | None:
    """An RE2 pattern that compiles within budget; None or '' means no regex."""
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise BadInput(f"regex must be text, got {type(raw).__name__}")
    if len(raw) > MAX_REGEX_LENGTH:
        raise BadInput(f"regex is longer than {MAX_REGEX_LENGTH} characters ({len(raw)})")
    if "\x00" in raw:
        raise BadInput("regex contains a NUL character")
    try:
        # Undecodable bytes on the command line arrive as lone surrogates (PEP 383): neither RE2
        # nor PostgreSQL can take them, and encoding them later raised UnicodeEncodeError (exit 1).
        raw.encode("utf-8")
    except UnicodeEncodeError:
        raise BadInput(f"regex {raw!r} is not valid UTF-8 text") from None
    try:
        compile_regex(raw)
    except re2.error as e:
        why = e.args[0].decode("utf-8", "replace") if e.args and isinstance(e.args[0], bytes) else str(e)
        # RE2 quotes the offending part of the pattern raw: keep the message on one line.
        why = "".join(c if c.isprintable() else repr(c)[1:-1] for c in why)
        raise BadInput(f"regex {raw!r} does not compile (RE2 syntax): {why}") from None
    return raw


def parse_expected_status(raw) -> tuple[tuple[int, int], ...]:
    """'200-399' or '200,301-308' -> ((200, 399),) or ((200, 200), (301, 308))."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    if not isinstance(raw, str) or not raw.strip():
        raise BadInput(f"expected status must be codes or ranges like 200-399, got {raw!r}")
    ranges = []
    for part in raw.split(","):
        low, _, high = part.strip().partition("-")
        try:
            low_code, high_code = int(low), int(high or low)
        except ValueError:
            raise BadInput(f"expected status must be codes or ranges like 200-399, got {raw!r}") from None
        if not (100 <= low_code <= high_code <= 599):
            raise BadInput(f"expected status codes must be within 100-599, low before high, got {raw!r}")
        ranges.append((low_code, high_code))
    return tuple(ranges)


def validate_timeout(raw) -> float:
    try:
        value = float(raw) if not isinstance(raw, bool) else None
    except (TypeError, ValueError, OverflowError):
        value = None
    if value is None or not (0 < value <= 3600):
        raise BadInput(f"timeout must be a number of seconds above 0 and at most 3600, got {raw!r}")
    return value


def validate_method(raw) -> str:
    method = raw.upper() if isinstance(raw, str) else raw
    if method not in METHODS:
        raise BadInput(f"method must be one of {', '.join(METHODS)}, got {raw!r}")
    return method


def validate_max_redirects(raw) -> int:
    # isdigit() accepts '²' and strip() more whitespace than int() does: both made int() raise.
    if isinstance(raw, str) and raw.strip().isdecimal():
        raw = int(raw.strip())
    if isinstance(raw, bool) or not isinstance(raw, int) or not (0 <= raw <= 30):
        raise BadInput(f"max redirects must be a whole number from 0 to 30, got {raw!r}")
    return raw


def validate_bool(name, raw) -> bool:
    if not isinstance(raw, bool):
        raise BadInput(f"{name} must be true or false, got {raw!r}")
    return raw


def option_key(name: str) -> str:
    """An option as the import/apply file spells it (max_redirects -> max-redirects)."""
    return name.replace("_", "-")


def make_entry(options: dict, check_config) -> UrlEntry:
    """Build a validated UrlEntry from user options; missing options take the configured defaults.

    A refusal names the option at fault in BadInput.field (None when several are, together)."""
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        raise BadInput(f"unknown option {unknown[0]!r} (known: {', '.join(OPTION_NAMES)})",
                       field=option_key(unknown[0]))
    if "url" not in options:
        raise BadInput("url is missing", field="url")

    def given(name, default):
        value = options.get(name)
        return default if value is None else value

    # `about`: the option being validated, named in BadInput.field when it is refused (a plain
    # variable, not a context manager per option: apply validates 100,000 entries).
    about = "url"
    try:
        url = normalise_url(options["url"])
        cron = tz = None
        about = "regions"
        regions = parse_regions(given("regions", getattr(check_config, "regions", [])))
        about = None       # which option a kind refuses is in its message (several may be given)
        if push.is_push(url):
            if options.get("regions") or options.get("down_when") is not None:
                raise BadInput("regions and down_when are for checked monitors: a push:// monitor's job pings it",
                               field="regions" if options.get("regions") else "down_when")
            regions = []          # check.regions is the default of checked monitors only
            push.check_options(options)
            if options.get("cron") is not None:
                if options.get("period") is not None:
                    raise BadInput("give a push monitor a period or a cron schedule, not both", field="cron")
                # period: the longest gap between fires (coverage's divisor); grace's default follows
                # the shortest, the job's usual interval (check/pushcron.py)
                about = "cron"
                cron, tz, shortest, period = pushcron.validate(options["cron"], options.get("tz"))
            else:
                if options.get("tz") is not None:
                    raise BadInput("tz is the zone of a cron schedule: give --cron too", field="tz")
                about = "period"
                period = push.validate_period(options.get("period"), check_config.min_period)
        else:
            for key in ("grace", "cron", "tz"):
                if options.get(key) is not None:
                    raise BadInput(f"{key} is for push:// monitors (a job's heartbeat)", field=key)
            kinds.check_options(url, options)     # no headers on a tcp:// monitor, no `send` on an http one
            about = "period"
            period = validate_period(given("period", check_config.default_period),
                                     check_config.min_period, check_config.max_period)
        expected_status = given("expected_status", check_config.expected_status)
        about = "expected_status"
        parse_expected_status(expected_status)
        about = "json" if options.get("json") is not None else "body"
        body, body_json = requestspec.validate_body(options.get("body"), options.get("json"))
        if options.get("send") is not None:     # tcp://: the bytes written, stored as the body
            about = "send"
            body = requestspec.validate_send(options["send"])
        regex = options.get("expect") if options.get("expect") is not None else options.get("regex")
        about = "client_cert"
        client_cert = requestspec.validate_path("client cert", options.get("client_cert"))
        about = "client_key"
        client_key = requestspec.validate_path("client key", options.get("client_key"))
        if client_key and not client_cert:
            raise BadInput("client key given without a client cert", field="client-key")
        about = "headers"
        headers = requestspec.validate_headers(options.get("headers"))
        about = "bearer"
        bearer = requestspec.validate_bearer(options.get("bearer"))
        if bearer and any(requestspec.header_name(line) == "authorization" for line in headers or []):
            raise BadInput("give bearer or an Authorization header, not both", field="bearer")
        about = "expect" if options.get("expect") is not None else "regex"
        regex = validate_regex(regex)
        about = "timeout"
        timeout = validate_timeout(given("timeout", check_config.timeout))
        about = "method"
        method = validate_method(given("method", "GET"))
        about = "max_redirects"
        max_redirects = validate_max_redirects(given("max_redirects", check_config.max_redirects))
        about = "verify_tls"
        verify_tls = validate_bool("verify_tls", given("verify_tls", check_config.verify_tls))
        about = "failure_threshold"
        failure_threshold = validate_threshold("failure threshold", options.get("failure_threshold"))
        about = "success_threshold"
        success_threshold = validate_threshold("success threshold", options.get("success_threshold"))
        about = "notify"
        notify = parse_notify(options.get("notify"))
        about = "assert"
        assertions = validate_assertions("assert", options.get("assert"), url)
        about = "degraded"
        degraded = validate_assertions("degraded", options.get("degraded"), url)
        about = "name"
        name = requestspec.validate_name(options.get("name"))
        about = "ip_version"
        ip_version = requestspec.validate_ip_version(options.get("ip_version"))
        about = "grace"
        grace = push.validate_grace(options.get("grace"), shortest if cron else period) if push.is_push(url) else None
        about = "down_when"
        down_when = parse_down_when(options.get("down_when"))
    except BadInput as e:
        if e.field is None and about is not None:
            e.field = option_key(about)
        raise
    return UrlEntry(
        url=url, period=period, regex=regex, timeout=timeout, method=method,
        expected_status=str(expected_status).replace(" ", ""), max_redirects=max_redirects,
        verify_tls=verify_tls, failure_threshold=failure_threshold, success_threshold=success_threshold,
        notify=notify, assertions=assertions, degraded=degraded, name=name, headers=headers, body=body,
        body_json=body_json, bearer=bearer, client_cert=client_cert, client_key=client_key,
        ip_version=ip_version, grace=grace, cron=cron, tz=tz, regions=regions, down_when=down_when,
    )


def validate_assertions(name, raw, url: str | None = None) -> list[str]:
    """A list of expressions (one expression alone is a list of one), each parsed and refused
    with its column and what was expected there, or when its subject means nothing for the
    URL's kind (`json` on a tcp:// monitor); stored as written."""
    try:
        parsed = parse_all(raw)
    except BadInput as e:
        raise BadInput(f"{name}: {e}") from None
    if url is not None:
        kinds.check_subjects(url, name, parsed)
    return [assertion.source for assertion in parsed]


def validate_threshold(name, raw) -> int | None:
    """Consecutive slots (1-1000); None keeps the alerts.* default."""
    if raw is None:
        return None
    if isinstance(raw, str) and raw.strip().isdecimal():
        raw = int(raw.strip())
    if isinstance(raw, bool) or not isinstance(raw, int) or not (1 <= raw <= 1000):
        raise BadInput(f"{name} must be a whole number from 1 to 1000, got {raw!r}")
    return raw
