"""The audit log: who changed what, when, with the settings before and after (issue 22,
DESIGN.md section 12).

record() takes the cursor of the change's own transaction: a change committed has its row, a
change rolled back has none. Secrets never reach the table: a monitor's settings are stored
as requestspec.shown_value shows them (URL userinfo and query, Authorization, Cookie and
Proxy-Authorization values, the bearer and anything holding `${` are REDACTED), and apply and
import store their plan lines and monitor identities, which are redacted the same way.
"""

import datetime
import json
import os
import pwd
import socket
from collections.abc import Mapping

from .. import requestspec
from ..db.store import load_queries
from ..redact import redact_url

QUERIES = load_queries("sitewatch.manage", "audit.sql")
DEFAULT_LIMIT = 100

# What a row's `action` says (README "Audit").
URL_ADD, URL_UPDATE, URL_REMOVE, URL_IMPORT = "url.add", "url.update", "url.remove", "url.import"
APPLY, SILENCE_ADD, SILENCE_REMOVE, NOTIFY_TEST = "apply", "silence.add", "silence.remove", "notify.test"
MAINTENANCE_ADD, MAINTENANCE_REMOVE = "maintenance.add", "maintenance.remove"
PUSH_TOKEN = "url.show-token"


def cli_actor(env: Mapping[str, str]) -> str:
    """`cli:USER@HOST`: the login that ran the command, on this host."""
    user = env.get("USER") or env.get("LOGNAME")
    if not user:
        try:
            user = pwd.getpwuid(os.getuid()).pw_name
        except KeyError:          # a uid with no passwd entry (a container): its number
            user = str(os.getuid())
    return f"cli:{user}@{socket.gethostname()}"


def record(cur, actor: str, action: str, target: str | None, before=None, after=None) -> None:
    """Write one row in the caller's transaction; `before` and `after` must be redacted already
    (monitor() and changes() do it for a monitor's settings)."""
    cur.execute(QUERIES["record"], {"actor": actor, "action": action, "target": target,
                                    "before": _json(before), "after": _json(after)})


def _json(value) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, default=str)


def monitor(settings: Mapping) -> dict:
    """A monitor's settings (a UrlEntry's as_row(), or a stored row) with every secret out."""
    return {column: requestspec.shown_value(column, value) for column, value in settings.items()
            if column != "id"}


def changes(before: Mapping, after: Mapping) -> tuple[dict, dict]:
    """(before, after) of the settings that differ, redacted."""
    differ = [column for column in after if column in before and before[column] != after[column]
              and not (not before[column] and not after[column] and column == "headers")]
    return (monitor({column: before[column] for column in differ}),
            monitor({column: after[column] for column in differ}))


def shown(settings: Mapping) -> str:
    """How a row names a monitor: its name, else its URL redacted."""
    return settings.get("name") or requestspec.shown_value("url", settings["url"])


def expire(conn, days: int) -> int:
    """Delete the rows older than `days` (history.raw_days: the audit log is kept as long as raw
    results); how many. Called by the maintenance job, in a transaction of its own."""
    with conn, conn.cursor() as cur:
        cur.execute(QUERIES["expire"], {"days": days})
        return cur.rowcount


def rows(conn, limit: int = DEFAULT_LIMIT, since: str | None = None) -> list[dict]:
    """The newest `limit` rows (made `since` a duration back or a time, when given), newest first."""
    with conn, conn.cursor() as cur:
        if since is not None:
            from ..history.report import parse_time
            cur.execute("SELECT now()")
            since = parse_time(since, "--since", cur.fetchone()[0])
        cur.execute(QUERIES["list"], {"limit": limit, "since": since})
        columns = [column.name for column in cur.description]
        return [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]


# --- recorders: the `audit` callbacks the stores call inside a change's transaction ------------

def on_add(actor: str, entry):
    return lambda cur, url_id: record(cur, actor, URL_ADD, entry.shown, None, monitor(entry.as_row()))


def on_update(actor: str):
    return lambda cur, before, entry: record(cur, actor, URL_UPDATE, entry.shown, *changes(before, entry.as_row()))


def on_remove(actor: str):
    return lambda cur, before: record(cur, actor, URL_REMOVE, shown(before), monitor(before), None)


def on_import(actor: str):
    """One row per chunk (import commits chunk by chunk): the monitors it upserted, by name or
    redacted URL (their settings are the file's, and 100,000 of them would be a big row)."""
    def audit(cur, entries, done):
        inserted = sum(1 for (was_inserted,) in done if was_inserted)
        record(cur, actor, URL_IMPORT, f"{len(entries)} monitors", None,
               {"inserted": inserted, "updated": len(done) - inserted, "monitors": [e.shown for e in entries]})
    return audit


def on_apply(actor: str, prune: bool):
    """One row per apply, holding its plan: an apply is one change set in one transaction, and its
    plan lines (apply.make_plan) already name each monitor and field with secrets redacted. A row
    per monitor would be 100,000 rows for a first apply of 100,000 entries."""
    def audit(cur, plan):
        record(cur, actor, APPLY, f"+{len(plan.added)} ~{len(plan.changed)} -{len(plan.removed)}", None,
               {"prune": prune, "plan": plan.lines})
    return audit


def on_silence_add(actor: str):
    return lambda cur, found: record(cur, actor, SILENCE_ADD, str(found["id"]), None, {
        "pattern": redact_url(found["pattern"]), "ends_at": found["ends_at"], "reason": found["reason"]})


def on_silence_remove(actor: str):
    return lambda cur, found: record(cur, actor, SILENCE_REMOVE, str(found["id"]),
                                     {"pattern": redact_url(found["pattern"])}, None)


def on_new_token(actor: str, shown: str):
    """`url show-token` issues a new token (the old one stops working): who, never the token."""
    return lambda cur, url_id: record(cur, actor, PUSH_TOKEN, shown, None, {"token": "new (not recorded)"})


def on_maintenance_add(actor: str, pattern: str, schedule: str, reason: str | None):
    return lambda cur, window_id: record(cur, actor, MAINTENANCE_ADD, str(window_id), None, {
        "pattern": redact_url(pattern), "schedule": schedule, "reason": reason})


def on_maintenance_remove(actor: str):
    return lambda cur, found: record(cur, actor, MAINTENANCE_REMOVE, str(found["id"]),
                                     {"pattern": redact_url(found["pattern"])}, None)


def notify_test(conn, actor: str, results: dict) -> None:
    """`notify test` changes nothing stored, but sends to channels: its own row, channel -> ok."""
    with conn, conn.cursor() as cur:
        record(cur, actor, NOTIFY_TEST, ", ".join(results), None, {"results": results})


def record_notify_test(with_database, actor: str, results: dict) -> None:
    """Record a `notify test` that sent something. It needs no database to send, so a database it
    cannot reach costs a warning, not the test's result."""
    if not results:
        return
    import sys

    from ..errors import SitewatchError
    try:
        with_database(lambda conn, *_: notify_test(conn, actor, results))
    except (SitewatchError, OSError) as e:
        print(f"sitewatch: warning: the test is not in the audit log: {e}", file=sys.stderr)


# --- `sitewatch audit` ----------------------------------------------------------------------------

def add_command(commands) -> None:
    parser = commands.add_parser(
        "audit", help="list changes: who changed what, when (newest first)",
        description="List the audit log, newest first: every change made with the command line (url "
                    "add, update, remove, import, apply, silence add and remove, notify test) or the "
                    "write API, with who made it (cli:USER@HOST, or the web.tokens name), and the "
                    "settings before and after, secrets redacted.")
    parser.add_argument("--json", action="store_true", help="print JSON (a list of rows)")
    parser.add_argument("--since", metavar="DURATION|TIME", help="only changes since then: 2h, 7d, or an ISO "
                        "8601 time (UTC without an offset)")
    parser.add_argument("--limit", type=_limit, default=DEFAULT_LIMIT, metavar="N",
                        help=f"rows at most (default: {DEFAULT_LIMIT})")


def _limit(text: str) -> int:
    import argparse
    if not text.isdecimal() or not 1 <= int(text) <= 1_000_000:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 1000000, got {text!r}")
    return int(text)


def print_rows(found: list[dict], as_json: bool) -> int:
    from ..redact import printable
    if as_json:
        print(json.dumps(found, default=lambda v: v.isoformat() if hasattr(v, "isoformat") else str(v),
                         ensure_ascii=False, indent=2))
        return 0
    if not found:
        print("no changes recorded")
        return 0
    print(f"{'ID':>6} {'AT (UTC)':19} {'ACTOR':24} {'ACTION':14} TARGET")
    for row in found:
        when = row["at"].astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        print(f"{row['id']:>6} {when:19} {printable(row['actor']):24} {row['action']:14} "
              f"{printable(row['target'] or '')}")
    return 0
