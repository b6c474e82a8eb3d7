"""structlog setup: console lines on a terminal, JSON lines otherwise, or ECS JSON (ELK).

Every line carries the process role (supervisor, producer, consumer-N, cli)
and pid, so lines from many processes can be told apart.
"""

import logging
import os
import sys

import structlog

_role = "cli"
_error_sink = None     # operations/sentry.py: error-level events are reported there too


def set_error_sink(sink) -> None:
    """Also hand every error-level event (a dict, exc_info still unformatted) to `sink`."""
    global _error_sink
    _error_sink = sink


def _add_process(_, __, event_dict):
    event_dict.setdefault("role", _role)
    event_dict.setdefault("pid", os.getpid())
    return event_dict


def _forward_errors(_, method, event_dict):
    if _error_sink is not None and method in ("error", "critical", "exception"):
        try:
            _error_sink(event_dict)
        except Exception:
            pass   # reporting an error must never raise from a log call
    return event_dict


def _to_devnull(stream) -> None:
    """The reader of `stream`'s pipe is gone for good: what is written from now on (and the
    flush at exit, whose failure would make the exit status 120) goes to /dev/null."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


class _LineWriter(structlog.WriteLogger):
    """structlog's WriteLogger that drops a line it cannot write. When the reader of our log
    pipe goes away, every write fails with EPIPE: raised from a log call, it would end the
    supervisor's SIGTERM handling before its children were told to stop (a hung run), or stop a
    consumer mid-batch. Monitoring goes on; what was logged meanwhile is lost with the reader."""

    def msg(self, message: str) -> None:
        try:
            super().msg(message)
        except BrokenPipeError:
            _to_devnull(self._file)
        except (OSError, ValueError):   # EIO; ValueError: the stream was closed
            pass

    log = debug = info = warn = warning = fatal = failure = err = error = critical = exception = msg


def configure(level: str = "info", fmt: str = "auto", role: str = "cli", stream=None) -> None:
    """Configure structlog for this process; call again after fork/spawn with the child's role."""
    global _role
    _role = role
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    if fmt == "ecs":
        from .operations import ecs
        renderers = [ecs.fields, ecs.renderer()]
    elif fmt == "console":
        renderers = [structlog.dev.ConsoleRenderer(colors=stream.isatty())]
    else:
        renderers = [structlog.processors.JSONRenderer()]
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _add_process,
            _forward_errors,
            structlog.processors.format_exc_info,
            *renderers,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        # One write per line (print() writes the newline separately): with PYTHONUNBUFFERED, as
        # in our Dockerfile, lines from the supervisor and its children would interleave.
        logger_factory=lambda *args: _LineWriter(stream),
        cache_logger_on_first_use=False,
    )


def get(name: str = "sitewatch"):
    return structlog.get_logger(name)
