"""A monitor's stored settings -> what one check sends: the request's method, headers and body,
with `${VAR}` read from this (the checking) host's environment.

Stored settings are a `url` row, a claimed task, or UrlEntry.as_row(). Headers, bearer and body
are stored as written; the variables are expanded here, at check time, so no secret is stored,
and each expanded value goes into the request's `secrets`, scrubbed from every error.

A variable that is not set here is the monitor's failure, not the site's (MissingVariable): the
consumer hands the slot back (another host may have it) and counts it, never records it down.

Hot path: a URL without request options costs one tuple test. The expansion of one with
options is cached per distinct stored definition (the environment of a running process does
not change), so a monitor checked every few seconds is expanded once.
"""

import dataclasses
import datetime
import functools
import os

from ..redact import REDACTED
from ..requestspec import SECRET_HEADERS, VARIABLE, VARIABLE_BYTES
from . import probe

JSON_CONTENT_TYPE = "application/json"


class MissingVariable(Exception):
    """A ${VAR} of the monitor's definition is not set on this host."""

    def __init__(self, name: str, where: str) -> None:
        super().__init__(f"${{{name}}} in the {where} is not set in the environment of this host; "
                         f"the site was not checked")
        self.name = name
        self.where = where


@functools.lru_cache(maxsize=4096)
def _expanded(headers: tuple[str, ...], body: bytes | None, body_json: bool, bearer: str | None
              ) -> tuple[tuple[tuple[str, str], ...], bytes | None, frozenset[str]] | MissingVariable:
    """(headers to send, body to send, secrets), or the MissingVariable (cached too)."""
    try:
        return _expand(headers, body, body_json, bearer, os.environ)
    except MissingVariable as missing:
        return missing


def _expand(headers, body, body_json, bearer, env):
    secrets = set()

    def value_of(match, where):
        name = match.group(1) if isinstance(match.group(1), str) else match.group(1).decode("ascii")
        if name not in env:
            raise MissingVariable(name, where)
        value = env[name]
        secrets.add(value)
        return value

    sent = []
    for line in headers:
        name, _, value = line.partition(":")
        name, value = name.strip(), value.strip()
        value = VARIABLE.sub(lambda m, name=name: value_of(m, f"header {name}"), value)
        if name.lower() in SECRET_HEADERS:
            secrets.add(value)
            secrets.add(value.partition(" ")[2])      # the credentials after "Bearer "/"Basic "
        sent.append((name, value))
    if bearer is not None:
        token = VARIABLE.sub(lambda m: value_of(m, "bearer"), bearer)
        secrets.add(token)
        sent.append(("Authorization", f"Bearer {token}"))
    if body is not None:
        body = VARIABLE_BYTES.sub(lambda m: value_of(m, "body").encode("utf-8"), body)
        if body_json and not any(name.lower() == "content-type" for name, _ in sent):
            sent.append(("Content-Type", JSON_CONTENT_TYPE))
    secrets.discard("")
    secrets.discard(REDACTED)
    return tuple(sent), body, frozenset(secrets)


def request_parts(settings) -> tuple[tuple[tuple[str, str], ...], bytes | None, frozenset[str]]:
    """(headers, body, secrets) for a monitor's stored settings; raises MissingVariable.

    `settings.get`: a claimed task from an older claim query, or an old UrlEntry row, has no
    request columns, which means none of them is set.
    """
    headers, body, bearer = settings.get("headers"), settings.get("body"), settings.get("bearer")
    if not (headers or body is not None or bearer):
        return (), None, frozenset()
    if body is not None and not isinstance(body, bytes):
        body = bytes(body)          # psycopg2 gives bytea as a memoryview
    found = _expanded(tuple(headers or ()), body, bool(settings.get("body_json")), bearer)
    if isinstance(found, MissingVariable):
        raise MissingVariable(found.name, found.where)    # a fresh one: no traceback piling up
    return found


def target_for(settings, max_body_bytes: int, source_address: str | None = None):
    """The probe's Target for a monitor's stored settings, its Request carrying the request
    options and the host's source address; raises MissingVariable."""
    target = probe.target_for(settings, max_body_bytes, source_address)
    get = settings.get
    if not (get("headers") or get("body") is not None or get("bearer") or get("client_cert") or get("ip_version")):
        return target                       # the common case, on the hot path: nothing to add
    headers, body, secrets = request_parts(settings)
    request = dataclasses.replace(target.request, headers=headers, body=body, client_cert=get("client_cert"),
                                  client_key=get("client_key"), ip_version=get("ip_version"),
                                  secrets=target.request.secrets | secrets)
    # Every other field of the Target as probe.target_for made it (what to judge).
    return probe.Target(request, **{field.name: getattr(target, field.name)
                                    for field in dataclasses.fields(target) if field.name != "request"})


def missing_outcome(missing: MissingVariable):
    """What `sitewatch check` shows for a definition this host cannot send: a monitor failure."""
    return probe.Outcome(started_at=datetime.datetime.now(datetime.timezone.utc), response_time_ms=None,
                         status_code=None, regex_matched=None, ok=False, error_kind="monitor",
                         error=str(missing), cert_days_left=None)
