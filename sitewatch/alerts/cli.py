"""The alerts commands of the CLI: `incidents`, `silence add|list|remove`, `notify test`.

cli.py builds the parser with add_commands(), validates with prepare() before any database
is opened (bad input exits 2 with one line, nothing written), and runs the command with
run() (database commands) or notify_test() (no database needed).
"""

import json
import sys

from ..errors import BadInput
from ..redact import redact_text, redact_url
from .settings import parse_duration

MAX_SILENCE = 366 * 86400
MAX_REASON = 500
DB_COMMANDS = ("incidents", "silence")


def add_commands(commands, parser_class) -> None:
    inc = commands.add_parser("incidents", help="list incidents (and notices that could not be delivered)",
                              description="List incidents, newest first: when each started and ended, "
                                          "the first and last error, how many checks failed. Notices "
                                          "given up on after alerts.max_attempts are listed too.")
    inc.add_argument("--open", action="store_true", help="only incidents still open")
    inc.add_argument("--url", metavar="URL|NAME", help="only this URL's incidents (a monitor's name "
                                                       "stands for its URL)")
    inc.add_argument("--json", action="store_true", help="print JSON (a list of incidents, each with its "
                                                          "dead_notifications)")

    sil = commands.add_parser("silence", help="silence notices for a URL or a glob for a while",
                              description="While a URL is silenced its state and incidents still "
                                          "update, but no notice is sent; when the silence ends, a "
                                          "notice goes out only if the state differs from the last "
                                          "one announced.")
    sil_commands = sil.add_subparsers(dest="silence_command", metavar="ACTION", required=True,
                                      parser_class=parser_class)
    add = sil_commands.add_parser("add", help="silence URL or GLOB for DURATION")
    add.add_argument("pattern", metavar="URL|NAME|GLOB", help="a monitored URL, a monitor's name (its URL "
                                                              "is silenced), or a glob with * (and ?) over "
                                                              "URLs, e.g. 'https://*.example.com/*' (not "
                                                              "over names)")
    add.add_argument("--for", dest="duration", metavar="DURATION", required=True, help="90s, 15m, 2h, 7d")
    add.add_argument("--reason", metavar="TEXT", help="why (shown by silence list)")
    listing = sil_commands.add_parser("list", help="silences in force (and those over in the last day)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    remove = sil_commands.add_parser("remove", help="end a silence now")
    remove.add_argument("id", metavar="ID", help="the silence's id (silence list)")

    notify = commands.add_parser("notify", help="notification channels")
    notify_commands = notify.add_subparsers(dest="notify_command", metavar="ACTION", required=True,
                                            parser_class=parser_class)
    test = notify_commands.add_parser("test", help="send a test message to each channel (or NAME)",
                                      description="Send a test message to every channel in alerts.channels "
                                                  "(or only NAME) and print the result per channel. Exit 1 "
                                                  "if any failed. No database needed.")
    test.add_argument("name", metavar="NAME", nargs="?", help="one channel name")


def prepare(args, cfg):
    """Validate the command's input before anything is opened; returns what run() needs."""
    if args.command == "incidents":
        if args.url is None:
            return None
        from ..monitorcli import name_or_url
        return name_or_url(args.url)
    if args.command == "silence" and args.silence_command == "add":
        return silence_request(args.pattern, args.duration, args.reason)
    if args.command == "silence" and args.silence_command == "remove":
        if not args.id.isdecimal():
            raise BadInput(f"silence id must be a number (see silence list), got {args.id!r}")
        return int(args.id)
    return None


def silence_request(pattern, duration, reason) -> dict:
    """A new silence's pattern, seconds and reason, checked (`silence add` and the write API;
    BadInput.field names the key of POST /api/v1/silences: pattern, for, reason)."""
    if not isinstance(pattern, str) or not pattern:
        raise BadInput("silence pattern must be a URL, a monitor's name or a glob", field="pattern")
    try:
        seconds = parse_duration(duration)
    except BadInput as e:
        raise BadInput(str(e), field="for") from None
    if not 0 < seconds <= MAX_SILENCE:
        raise BadInput(f"--for must be more than 0 and at most 366d, got {duration!r}", field="for")
    if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON or not reason.isprintable()):
        raise BadInput(f"--reason must be one line of at most {MAX_REASON} printable characters", field="reason")
    try:
        pattern = silence_pattern(pattern)
    except BadInput as e:
        raise BadInput(str(e), field="pattern") from None
    return {"pattern": pattern, "seconds": seconds, "reason": reason}


def silence_pattern(raw: str) -> str:
    """A glob (has a *) is kept as written; anything else is a URL, normalised like url add, or a
    monitor's name (monitorcli.MonitorName, looked up when the database is open)."""
    if "*" not in raw:
        from ..monitorcli import name_or_url
        return name_or_url(raw)
    if len(raw) > 2048 or any(ch.isspace() or not ch.isprintable() for ch in raw):
        raise BadInput("silence pattern must be one word of at most 2048 printable characters")
    return raw


def refuse_name_glob(conn, pattern: str) -> None:
    """A glob covers the URLs it matches. One that matches no monitored URL but monitors' names
    (`shop-*`) would cover nothing, silently: refused, naming them (BadInput, exit 2 or 400).
    A glob that matches nothing yet is kept: URLs added later under it are covered."""
    if "*" not in pattern:
        return
    from .store import names_only_glob
    names = names_only_glob(conn, pattern)
    if names:
        raise BadInput(f"{pattern!r} matches no monitored URL, only the names of {', '.join(names)}: a glob is "
                       f"over URLs (e.g. 'https://*.example.com/*'); give a name alone to cover its "
                       f"monitor's URL", field="pattern")


def _json(rows) -> str:
    return json.dumps(rows, default=lambda v: v.isoformat() if hasattr(v, "isoformat") else str(v), indent=2)


def _when(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def run(args, cfg, conn, payload, actor: str) -> int:
    from ..manage import audit
    from ..monitorcli import monitor_url
    from . import store
    if args.command == "incidents" and payload is not None:
        payload = monitor_url(conn, payload)
    if args.command == "silence" and args.silence_command == "add":
        payload = {**payload, "pattern": monitor_url(conn, payload["pattern"])}
        refuse_name_glob(conn, payload["pattern"])
    if args.command == "incidents":
        return print_incidents(store.list_incidents(conn, args.open, payload),
                               store.list_dead(conn, payload), args.json)
    if args.silence_command == "add":
        found = store.add_silence(conn, payload["pattern"], payload["seconds"], payload["reason"],
                                  audit.on_silence_add(actor))
        print(f"silence {found['id']}: {redact_url(payload['pattern'])} until {_when(found['ends_at'])} UTC")
        return 0
    if args.silence_command == "remove":
        found = store.end_silence(conn, payload, audit.on_silence_remove(actor))
        if found is None:
            raise BadInput(f"no silence with id {payload} (see silence list)")
        print(f"silence {found['id']} ended: {redact_url(found['pattern'])}")
        return 0
    rows = store.list_silences(conn)
    for row in rows:
        row["pattern"] = redact_url(row["pattern"])
    if args.json:
        print(_json(rows))
    elif not rows:
        print("no silences")
    else:
        print(f"{'ID':>5} {'UNTIL (UTC)':20} {'ACTIVE':6} {'PATTERN':50} REASON")
        for r in rows:
            print(f"{r['id']:>5} {_when(r['ends_at']):20} {'yes' if r['active'] else 'no':6} "
                  f"{r['pattern']:50} {r['reason'] or ''}")
    return 0


INCIDENT_FIELDS = ("url", "started_at", "ended_at", "first_error_kind", "first_error", "last_error_kind",
                   "last_error", "failed_checks", "end_reason")


def print_incidents(incidents, dead, as_json: bool) -> int:
    dead_by_incident = {}
    loose = []
    for d in dead:
        d["url"] = redact_url(d["url"] or "")
        d["last_error"] = redact_text(d["last_error"] or "")
        if d["incident_id"] is not None:
            dead_by_incident.setdefault(d["incident_id"], []).append(d)
        else:
            loose.append(d)
    out = []
    for i in incidents:
        row = {k: i[k] for k in INCIDENT_FIELDS}
        row["url"] = redact_url(row["url"])
        row["dead_notifications"] = [{k: d[k] for k in ("kind", "channel", "key", "attempts", "last_error")}
                                     for d in dead_by_incident.get(i["id"], [])]
        out.append(row)
    if as_json:
        print(_json(out))
        if loose:
            print(f"sitewatch: {len(loose)} dead notices not tied to an incident (certificate, flapping): "
                  f"run `sitewatch incidents` without --json to see them", file=sys.stderr)
        return 0
    if not out:
        print("no incidents")
    else:
        print(f"{'STARTED (UTC)':20} {'ENDED (UTC)':20} {'FAILED':>6}  {'URL':50} LAST ERROR")
        for r in out:
            error = f"{r['last_error_kind']}: {r['last_error']}" if r["last_error_kind"] else ""
            print(f"{_when(r['started_at']):20} {_when(r['ended_at']) if r['ended_at'] else 'open':20} "
                  f"{r['failed_checks']:>6}  {r['url']:50} {error}")
    if dead:
        print(f"\nDead notices (not delivered after alerts.max_attempts): {len(dead)}")
        for d in dead:
            print(f"  {d['kind']:13} {d['channel']:12} {d['url']:40} {d['attempts']} tries: {d['last_error']}")
    return 0


def notify_test(args, cfg) -> tuple[int, dict]:
    """Send a test message to each channel; (exit 1 if any failed, channel -> ok)."""
    from .channels import Channels
    channels = Channels(cfg.alerts.channels)
    if not channels.names():
        raise BadInput("no channels configured (alerts.channels)")
    names = channels.names()
    if args.name is not None:
        if args.name not in names:
            raise BadInput(f"unknown channel {args.name!r} (configured: {', '.join(names)})")
        names = [args.name]
    failed, results = 0, {}
    starts = {name: channels.start(name, "sitewatch: test notice",
                                   "This is a test notice from sitewatch: this channel works.\n"
                                   "[sitewatch test test]", "info") for name in names}
    for name, result in starts.items():
        if result.done.wait(cfg.alerts.send_timeout):
            ok, error = result.ok, result.error
        else:
            ok, error = False, f"no answer within {cfg.alerts.send_timeout:g} s"
        failed += not ok
        results[name] = ok
        print(f"{name}: {'ok' if ok else 'FAILED: ' + error}")
    return (1 if failed else 0), results
