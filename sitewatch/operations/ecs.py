"""Elastic Common Schema log lines (log.format: ecs), rendered by the `ecs-logging` library.

Our events carry free-form keys (`error="..."`, `url=...`, `role=...`) that would clash
with ECS field sets of the same name (`error` and `url` are objects in ECS, and an
Elasticsearch index rejects a string where its mapping has an object). So the fields
ECS defines are filled in, and every other key of the event goes under the custom
`sitewatch.` namespace, as ECS recommends for custom fields.
"""

import socket

import ecs_logging

from .. import __version__

SERVICE = "sitewatch"


def fields(_, __, event_dict: dict) -> dict:
    """structlog processor: our event dict -> ECS fields (dotted keys; the formatter nests them)."""
    out = {"event": event_dict.pop("event", ""),
           "log.level": event_dict.pop("level", "info"),
           "service.name": SERVICE, "service.version": __version__,
           "host.name": _HOST,
           "process.pid": event_dict.pop("pid", None),
           "labels.role": event_dict.pop("role", None)}
    timestamp = event_dict.pop("timestamp", None)
    if timestamp:
        out["@timestamp"] = timestamp
    stack = event_dict.pop("exception", None)
    if stack:
        out["error.stack_trace"] = stack
    error = event_dict.pop("error", None)
    if error is not None:
        out["error.message"] = str(error)
    for key, value in event_dict.items():
        out[f"{SERVICE}.{key}"] = value
    return out


_HOST = socket.gethostname()


def renderer():
    """The ecs-logging library's structlog renderer: ECS JSON, one object per line."""
    return ecs_logging.StructlogFormatter()
