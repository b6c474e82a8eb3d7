"""Optional error reporting to Sentry (sentry.dsn, or SENTRY_DSN) from every process.

Each process calls init() itself (spawned children do not inherit the SDK): the
supervisor in `run`, every child in run/child.py before its role's loop, so a new role
gets it for free. Reported: unhandled exceptions, and every error-level log event
(structlog does not go through the logging module, so logs.py hands those events to
report()). Each event is tagged with the role, the host and the release, and scrubbed
before it leaves: URL userinfo and query strings, DSN passwords (the configured ones
as written, too) wherever they appear, stack-frame variables included.

Without a DSN, sentry_sdk is never imported and nothing changes.
"""

import logging
import socket
import sys

from .. import __version__, logs
from ..redact import redact_text, scrub, written_passwords

FLUSH_TIMEOUT = 2.0      # seconds a process waits at exit for its reports to be sent

_secrets: list[str] = []
_active = False


def init(dsn: str | None, role: str, database_dsn: str | None = None) -> bool:
    """Start reporting from this process; False (and no import) without a DSN."""
    global _active, _secrets
    if not dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.atexit import AtexitIntegration
    from sentry_sdk.integrations.dedupe import DedupeIntegration
    from sentry_sdk.integrations.excepthook import ExcepthookIntegration
    from sentry_sdk.integrations.logging import LoggingIntegration
    from sentry_sdk.integrations.threading import ThreadingIntegration

    _secrets = sorted({*written_passwords(database_dsn or ""), *written_passwords(dsn)}, key=len, reverse=True)
    host = socket.gethostname()
    sentry_sdk.init(
        dsn=dsn,
        release=f"sitewatch@{__version__}",
        server_name=host,
        send_default_pii=False,
        before_send=scrub_event,
        before_breadcrumb=lambda crumb, hint: scrub_event(crumb, hint),
        # Only what we need, chosen by hand: the default set would patch http.client, adding
        # breadcrumbs (full URLs) and tracing headers to every check of a monitored site.
        default_integrations=False,
        auto_enabling_integrations=False,
        integrations=[
            AtexitIntegration(), DedupeIntegration(), ExcepthookIntegration(), ThreadingIntegration(),
            # urllib3 and the other libraries log through `logging`: their errors count too.
            LoggingIntegration(level=None, event_level=logging.ERROR),
        ],
        traces_sample_rate=None,
    )
    sentry_sdk.set_tag("role", role)
    sentry_sdk.set_tag("host", host)
    logs.set_error_sink(report)
    _active = True
    return True


def report(event_dict: dict) -> None:
    """An error-level structlog event: its exception if it has one, else its message."""
    import sentry_sdk
    event = dict(event_dict)
    exc_info = event.pop("exc_info", None)
    message = str(event.pop("event", ""))
    for key in ("level", "timestamp", "pid", "role"):
        event.pop(key, None)
    with sentry_sdk.new_scope() as scope:
        scope.set_context("log", {key: str(value) for key, value in event.items()})
        if exc_info:
            if exc_info is True:
                exc_info = sys.exc_info()
            elif isinstance(exc_info, BaseException):
                exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
            scope.set_tag("log_event", message[:200])
            sentry_sdk.capture_exception(exc_info)
        else:
            sentry_sdk.capture_message(message, level="error")


def capture_current() -> None:
    """Report the exception being handled (an unhandled one, about to end the process)."""
    if _active:
        import sentry_sdk
        sentry_sdk.capture_exception()


def flush() -> None:
    """Send what is queued before the process exits (a child's exit does not wait otherwise)."""
    if _active:
        import sentry_sdk
        sentry_sdk.flush(timeout=FLUSH_TIMEOUT)


def scrub_event(event, hint=None):
    """before_send: every string of the event with URL credentials, query strings and DSN
    passwords replaced, however deep (messages, exception values, frame variables, contexts)."""
    return _scrub(event)


def _scrub(value):
    if isinstance(value, str):
        return scrub(redact_text(value), _secrets) if value else value
    if isinstance(value, dict):
        return {_scrub(key) if isinstance(key, str) else key: _scrub(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrub(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_scrub(item) for item in value)
    return value

