"""One availability check of one URL: fetch with an engine (or a monitor kind), then judge.

`check(Target) -> Outcome` never raises, and every failure is classified into a
short `error_kind` plus a readable, redacted `error` (see DESIGN.md section 4,
"One check"). Fetching is an engine's (engine.py: the boundary; urllib3_engine.py,
curl_engine.py); judging is here, once for every engine: the expected status
ranges, the regex, then the assertions (sitewatch/assertions). User regexes run on google-re2 (linear time), never on
Python's `re`. A URL of another scheme (tcp://, tls://: check/kinds.py) is fetched by its kind's
module and judged here the same way; status ranges apply only to a response with a status.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
from dataclasses import dataclass

import re2

from sitewatch import assertions
from sitewatch.redact import printable, redact_url
from sitewatch.regex import search_bytes
from sitewatch.urlspec import compile_regex, parse_expected_status

from . import kinds
from .engine import (
    MAX_ERROR_CHARS,
    USER_AGENT,
    Engine,
    Request,
    Response,
    Timings,
    monitor_failure,
    redacted,
    shorten,
    url_secrets,
)

__all__ = ["MAX_ERROR_CHARS", "USER_AGENT", "Outcome", "Target", "check", "compile_regex", "judge", "target_for"]

# Cap on the length of a quoted regex inside a message.
MAX_DETAIL_CHARS = 200
_REQUEST_FIELDS = frozenset(field.name for field in dataclasses.fields(Request))


@dataclass(frozen=True, init=False)
class Target:
    """What to check (the Request) and what to judge. Built by the caller from a `url` row.

    `Target(request, regex=...)`, or the short form `Target(url, regex=..., timeout=...)`
    where the Request's fields are given as keywords. Fields added below (assertions...)
    are accepted as keywords by the same __init__.
    """

    request: Request
    regex: str | None = None
    expected_status: tuple[tuple[int, int], ...] = ((200, 399),)  # inclusive ranges
    # parsed `assert` and `degraded` expressions (sitewatch/assertions; DESIGN.md section 12)
    assertions: tuple[assertions.Assertion, ...] = ()
    degraded: tuple[assertions.Assertion, ...] = ()

    def __init__(self, request: Request | str | None = None, /, **fields) -> None:
        if not isinstance(request, Request):
            given = {name: fields.pop(name) for name in list(fields) if name in _REQUEST_FIELDS}
            request = Request(**({"url": request} if request is not None else {}), **given)
        object.__setattr__(self, "request", request)
        for field in dataclasses.fields(self)[1:]:
            if field.name in fields:
                value = fields.pop(field.name)
            elif field.default is not dataclasses.MISSING:
                value = field.default
            else:
                value = field.default_factory()
            object.__setattr__(self, field.name, value)
        if fields:
            raise TypeError(f"Target() got unexpected keyword arguments: {', '.join(sorted(fields))}")

    @property
    def url(self) -> str:
        return self.request.url


@functools.lru_cache(maxsize=1024)
def _expected_ranges(text: str) -> tuple[tuple[int, int], ...]:
    return parse_expected_status(text)


def target_for(settings, max_body_bytes: int, source_address: str | None = None) -> Target:
    """The Target for a URL's stored settings (a `url` row, a claimed task, or UrlEntry.as_row()),
    checked from `source_address` (the host's check.source_address; None: the system chooses)."""
    url = settings["url"]
    request = Request(url=url, method=settings["method"], timeout=float(settings["timeout"]),
                      max_redirects=settings["max_redirects"], verify_tls=settings["verify_tls"],
                      max_body_bytes=max_body_bytes, source_address=source_address,
                      # a tcp:// monitor's `expect` is its regex: the read stops when it matches
                      expect=None if kinds.is_http(url) else settings["regex"])
    return Target(request, regex=settings["regex"], expected_status=_expected_ranges(settings["expected_status"]),
                  assertions=assertions.parse_all(settings.get("assertions")),
                  degraded=assertions.parse_all(settings.get("degraded")))


@dataclass(frozen=True)
class Outcome:
    """The result of one check, shaped like a `task_result` row."""

    started_at: datetime.datetime  # wall clock (UTC) when the check started
    response_time_ms: float | None  # start to end of the final body read; None unless fully read
    status_code: int | None  # final status (the last one received when redirects fail)
    regex_matched: bool | None  # None without a regex or when no complete body was read
    ok: bool
    # dns, connect, timeout, tls, redirects, body_too_large, protocol, status, regex; or
    # monitor: the monitor itself failed (out of file descriptors, threads, memory), the site was not checked
    error_kind: str | None
    error: str | None  # human-readable, secrets redacted, printable (see __post_init__)
    cert_days_left: int | None  # smallest days-until-notAfter of the certificates seen (https)
    timings: Timings = Timings()  # the final hop's phases (engine.Timings)
    degraded: bool = False  # ok, but a `degraded` expression failed; `error` names it

    def __post_init__(self) -> None:
        # Every error that is stored is made here (the consumer's `lost` ones too): it quotes
        # what a site sent, so control characters are escaped (redact.printable: no ESC for a
        # terminal, nothing an XML feed refuses) and the whole is cut to MAX_ERROR_CHARS.
        if self.error is not None:
            object.__setattr__(self, "error", shorten(printable(self.error), MAX_ERROR_CHARS))


def _shorten(text: str) -> str:
    return shorten(text, MAX_DETAIL_CHARS)


# --------------------------------------------------------------------------- judging


def _format_ranges(ranges: tuple[tuple[int, int], ...]) -> str:
    return ", ".join(str(low) if low == high else f"{low}-{high}" for low, high in ranges)


def _judge_status(target: Target, status: int) -> tuple[str, str] | None:
    expected = target.expected_status
    if any(low <= status <= high for low, high in expected):
        return None
    return "status", f"HTTP {status}, expected {_format_ranges(expected)}"


def _judge_regex(target: Target, body: bytes | None) -> tuple[tuple[str, str] | None, bool | None]:
    pattern = target.regex
    if pattern is None:
        return None, None
    shown = _shorten(repr(pattern))
    if not kinds.is_http(target.url):       # a tcp:// monitor's `expect`, over what was read
        if body is None:
            return ("regex", f"expect {shown} not checked: nothing was read"), None
        matched = search_bytes(pattern, body)
        return (None, True) if matched else \
            (("regex", f"expect {shown} not found in the {len(body)} bytes read: {_shorten(repr(body[:80]))[1:]}"),
             False)
    if body is None:
        reason = f"a {target.request.method.upper()} response has no body"
        return ("regex", f"regex {shown} not checked: {reason}"), None
    try:
        matched = search_bytes(pattern, body)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):  # re2 reports its parse errors as bytes
            reason = reason.decode(errors="replace")
        return ("regex", f"invalid regex {shown}: {reason}"), None
    if matched:
        return None, True
    return ("regex", f"regex {shown} not found in body ({len(body)} bytes)"), False


def judge(target: Target, response: Response, started_at: datetime.datetime) -> Outcome:
    """The verdict on what an engine fetched: transport errors first, then status, then regex, then
    the `assert` expressions (error_kind `assertion`), then the `degraded` ones (still ok)."""
    regex_matched = None
    degraded = False
    if response.error_kind is not None:  # already redacted and cut by the engine
        failure, error = response.error_kind, response.error
    else:
        # A kind without a status (tcp://, dns://...) has no status to judge, but may have a
        # default verdict (dns: NOERROR with records) unless the assertions say otherwise.
        failed_status = _judge_status(target, response.status) if response.status is not None else \
            kinds.default_failure(target.url, response.values, target.assertions)
        failed_regex, regex_matched = _judge_regex(target, response.body)
        found = failed_status or failed_regex
        if not found and (target.assertions or target.degraded):   # none: nothing to pay
            failed, slow = assertions.judge(target.assertions, target.degraded, response)
            if failed:
                found = "assertion", failed.message
            elif slow:   # up, but degraded: ok stays true, the error names the expression
                degraded, found = True, (None, slow.message)
        failure = found[0] if found else None
        error = redacted(found[1], url_secrets(target.url) | target.request.secrets) if found else None
    return Outcome(
        started_at=started_at,
        response_time_ms=response.response_time_ms if response.error_kind is None else None,
        status_code=response.status,
        regex_matched=regex_matched,
        ok=failure is None,
        error_kind=failure,
        error=error,
        cert_days_left=response.cert_days_left,
        timings=response.timings,
        degraded=degraded,
    )


def check(target: Target, engine: Engine | None = None) -> Outcome:
    """Check one URL with `engine` (default: urllib3). Never raises (except KeyboardInterrupt/SystemExit)."""
    started_at = datetime.datetime.now(datetime.timezone.utc)
    try:
        kind = None if kinds.is_http(target.request.url) else kinds.kind_of(target.request.url)
        if kind is not None:     # tcp://, tls://...: the kind's own fetch (an unknown scheme: the engine says so)
            return judge(target, kind.fetch(target.request), started_at)
        if engine is None:
            from .urllib3_engine import URLLIB3 as engine
        return judge(target, engine.fetch(target.request), started_at)
    except Exception as exc:  # engines never raise; a bug of ours must still not crash the worker
        exhausted = monitor_failure(exc)
        if exhausted:
            kind, error = "monitor", f"monitor failure: {exhausted}; the site was not checked"
        else:  # the class name only: str(exc) may hold secrets
            kind, error = "protocol", f"unexpected error: {type(exc).__name__}"
        return Outcome(started_at=started_at, response_time_ms=None, status_code=None, regex_matched=None,
                       ok=False, error_kind=kind, error=error, cert_days_left=None)


# --------------------------------------------------------------------------- output


def _phases(timings: Timings) -> str:
    phases = (("dns", timings.dns_ms), ("connect", timings.connect_ms), ("tls", timings.tls_ms),
              ("first byte", timings.first_byte_ms))
    shown = [f"{name} {value:.1f} ms" for name, value in phases if value is not None]
    return ", ".join(shown) or "-"


def format_outcome(target: Target, outcome: Outcome, engine: str | None = None) -> str:
    """A few human-readable lines, for `sitewatch check`. A kind without a status (tcp://, tls://)
    shows no Status line, and a tcp:// monitor's regex is its Expect."""
    http = kinds.is_http(target.url)
    lines = [
        f"URL:      {redact_url(target.url)}",
        f"Verdict:  {('UP (degraded)' if outcome.degraded else 'UP') if outcome.ok else 'DOWN'}",
        *([f"Status:   {outcome.status_code if outcome.status_code is not None else '-'}"] if http else []),
        f"Time:     {f'{outcome.response_time_ms:.1f} ms' if outcome.response_time_ms is not None else '-'}",
        f"Phases:   {_phases(outcome.timings)}",
    ]
    if engine is not None:
        lines.append(f"Engine:   {engine}")
    if target.regex is not None:
        shown = {True: "matched", False: "not matched", None: "not checked"}[outcome.regex_matched]
        lines.append(f"{'Regex:    ' if http else 'Expect:   '}{_shorten(repr(target.regex))} {shown}")
    if outcome.error_kind:
        lines.append(f"Error:    [{outcome.error_kind}] {outcome.error}")
    if outcome.cert_days_left is not None:
        lines.append(f"TLS cert: expires in {outcome.cert_days_left} days")
    lines.append(f"Started:  {outcome.started_at.isoformat()}")
    return "\n".join(lines)


def outcome_to_dict(outcome: Outcome) -> dict:
    """A JSON-serialisable dict (started_at as ISO 8601)."""
    data = dataclasses.asdict(outcome)  # timings: a nested dict of the four phases
    data["started_at"] = outcome.started_at.isoformat()
    return data
