"""Monitor kinds: the URL's scheme chooses what a check does (DESIGN.md section 12).

http:// and https:// are the engines' (urllib3_engine.py, curl_engine.py), unchanged. Every
other scheme is a kind: a sibling module under check/ with

    SCHEME = "tcp"                        # the URL scheme it owns
    def normalise(url: str) -> str        # validate and normalise; BadInput("one clear line")
    def fetch(request: Request) -> Response   # never raises; failures classified and redacted
    SUBJECTS = frozenset({...})           # the assertion subjects that make sense for it
    OPTIONS = frozenset({...})            # optional: monitor options it takes beyond every
                                          # kind's own (COMMON_OPTIONS), e.g. {"send", "expect"}
    def available() -> str | None         # optional: why this host cannot check the kind
                                          # (icmp: sockets forbidden), warned at url add
    def default_failure(values, asserted) -> str | None   # optional: the verdict when the
                                          # `assert` expressions (their subjects: `asserted`) do
                                          # not say otherwise; a message fails the check with
                                          # error_kind DEFAULT_FAILURE_KIND (default: SCHEME)

registered below by one line, and imported only when a URL of its scheme is met (so `url list`
does not pay for dnspython). probe.check() hands a kind's Request to its fetch() and judges the
Response like any other (probe.judge). A kind may also offer its check as steps (steps.py),

    def steps(request: Request)           # a generator of steps; returns the Response
    def steps_on_loop(request) -> bool    # whether this check cannot block the loop

so the curl engine's consumer loop drives it (run/transfers.py); other checks run on threads
beside the loop (run/dispatch.py).

Blackbox_exporter's prober map is the model: one function per kind, one result type.
"""

from __future__ import annotations

import importlib
import time

from ..errors import BadInput

HTTP_SCHEMES = ("http", "https")
# scheme -> module under sitewatch/check/. One line per kind.
_MODULES = {
    "tcp": "tcp",
    "tls": "handshake",
    "dns": "dns",
    "icmp": "icmp",
}
SCHEMES = (*HTTP_SCHEMES, *_MODULES)     # every scheme a monitor's URL may have

# Assertion subjects of http(s) monitors (sitewatch/assertions/grammar.py).
HTTP_SUBJECTS = frozenset({"status", "response_time", "body", "header", "json", "cert_days", "redirects"})
# Options every kind takes (urlspec.OPTION_NAMES). expected-status and max-redirects are
# stored for every monitor and do not apply to a kind without a status or redirects;
# verify-tls applies to https:// and tls:// (stored for every monitor too).
COMMON_OPTIONS = frozenset({"url", "name", "period", "timeout", "failure_threshold", "success_threshold",
                            "notify", "assert", "degraded", "ip_version", "expected_status",
                            "max_redirects", "verify_tls", "regions", "down_when"})
# Options that mean something only for http(s), and the value each has when not given
# (`url update` passes every stored value back, a GET among them).
_HTTP_OPTION_DEFAULTS = {"method": "GET", "headers": None, "body": None, "json": None, "bearer": None,
                         "client_cert": None, "client_key": None, "regex": None}
_loaded: dict = {}
UNAVAILABLE_TTL = 60.0
_availability: dict = {}      # scheme -> (why not, or None; until when)


def is_http(url: str) -> bool:
    """The hot path's one test: an http(s) URL goes to the engines as it always did."""
    return url.startswith(("http:", "https:"))


def scheme_of(url: str) -> str:
    return url.partition(":")[0].lower()


def module(scheme: str):
    """The kind module owning `scheme`, imported on first use; None for http(s) or an unknown one."""
    found = _loaded.get(scheme)
    if found is None and scheme in _MODULES:
        found = importlib.import_module(f"{__package__}.{_MODULES[scheme]}")
        if found.SCHEME != scheme:      # a registration mistake, caught by the first test
            raise RuntimeError(f"check/{_MODULES[scheme]}.py owns {found.SCHEME!r}, registered for {scheme!r}")
        _loaded[scheme] = found
    return found


def kind_of(url: str):
    """The kind module of a (normalised) URL; None for http(s)."""
    return None if is_http(url) else module(scheme_of(url))


def fetch(request):
    """A kind's fetch of `request` (never an http(s) one: those are the engines'). Never raises."""
    kind = kind_of(request.url)
    if kind is None:
        from .engine import failed
        return failed("protocol", f"unsupported URL scheme {scheme_of(request.url)!r}", ())
    return kind.fetch(request)


def normalise(scheme: str, raw: str) -> str:
    """A non-HTTP URL validated and normalised by its kind; BadInput for an unknown scheme."""
    kind = module(scheme)
    if kind is None:
        raise BadInput(f"URL scheme must be {schemes_text()}, got {scheme or 'none'!r}")
    return kind.normalise(raw)


def schemes_text() -> str:
    """`http, https, tcp or tls`: for help texts and errors."""
    return f"{', '.join(SCHEMES[:-1])} or {SCHEMES[-1]}"


def default_failure(url: str, values, assertions) -> tuple[str, str] | None:
    """(error_kind, message) when the kind's default verdict fails a response its `assert`
    expressions do not speak for (dns: an rcode other than NOERROR, or no records); else None."""
    kind = kind_of(url)
    judge = getattr(kind, "default_failure", None)
    if judge is None:
        return None
    asserted = frozenset("len(answer)" if assertion.subject == "len" and assertion.path is None
                         else assertion.subject for assertion in assertions)
    message = judge(values, asserted)
    return (getattr(kind, "DEFAULT_FAILURE_KIND", kind.SCHEME), message) if message else None


def unavailable(url: str) -> str | None:
    """Why this host cannot check `url`'s kind (icmp:// where the system forbids its sockets);
    None when it can. Such checks are monitor failures, never the site down. Asked for every
    claimed task of the kind, so the answer is kept UNAVAILABLE_TTL seconds per scheme (an
    administrator may change the sysctl while sitewatch runs)."""
    kind = kind_of(url)
    available = getattr(kind, "available", None)
    if available is None:
        return None
    now = time.monotonic()
    known = _availability.get(kind.SCHEME)
    if known is None or known[1] <= now:
        known = _availability[kind.SCHEME] = (available(), now + UNAVAILABLE_TTL)
    return known[0]


def subjects_of(url: str) -> frozenset:
    kind = kind_of(url)
    return HTTP_SUBJECTS if kind is None else kind.SUBJECTS


def check_subjects(url: str, option: str, assertions) -> None:
    """Refuse (BadInput) an expression whose subject the URL's kind does not offer, naming it:
    `json $.x == 1` means nothing for a tcp:// monitor and could only ever fail."""
    subjects = subjects_of(url)
    for assertion in assertions:
        if assertion.needs not in subjects:
            where = _a_monitor_of(url)
            raise BadInput(f"{option}: {assertion.source!r} does not apply to {where} "
                           f"(its subjects: {', '.join(sorted(_shown(subjects)))})")


def _shown(subjects) -> list[str]:
    """Subjects as an expression writes them."""
    spelled = {"header": "header NAME", "json": "json PATH, len(json PATH)", "answer": "answer, len(answer)"}
    return [spelled.get(subject, subject) for subject in subjects]


def check_options(url: str, options: dict) -> None:
    """Refuse (BadInput) an option given that the URL's kind does not take (a tcp:// monitor has no
    headers, an http one no `send`), naming it. `options` are make_entry's (None: not given)."""
    kind = kind_of(url)
    if kind is None:
        accepted = COMMON_OPTIONS | _HTTP_OPTION_DEFAULTS.keys()
    else:
        accepted = COMMON_OPTIONS | getattr(kind, "OPTIONS", frozenset())
    wrong = [name for name in sorted(options) if name not in accepted
             and not _unset(options[name], _HTTP_OPTION_DEFAULTS.get(name))]
    if wrong:
        owners = [f"{scheme}://" for scheme in _MODULES if wrong[0] in getattr(module(scheme), "OPTIONS", ())]
        hint = f" (it is for {', '.join(owners)} monitors)" if owners else \
            " (give expect: the regex over what is read)" if wrong[0] == "regex" and "expect" in accepted else ""
        raise BadInput(f"{wrong[0].replace('_', '-')} does not apply to {_a_monitor_of(url)}{hint}")


def _a_monitor_of(url: str) -> str:
    """`an http(s) monitor`, `a tcp:// monitor`, `an icmp:// monitor`: for messages."""
    if is_http(url):
        return "an http(s) monitor"
    scheme = scheme_of(url)
    return f"{'an' if scheme[:1] in 'aeiou' else 'a'} {scheme}:// monitor"


def _unset(value, default) -> bool:
    return value is None or value == default or (not isinstance(value, bool) and not value and value != 0)
