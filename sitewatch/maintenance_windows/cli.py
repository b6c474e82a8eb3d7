"""`sitewatch maintenance add|list|remove` (DESIGN.md section 12, Management).

cli.py builds the parser with add_commands(), validates with prepare() before any database is
opened (bad input exits 2 with one line, nothing written), and runs the command with run().
"""

import datetime
import json

from ..errors import BadInput
from ..redact import redact_url
from . import schedule

EVERY_HELP = "day, week (the weekday of --start), or a 5-field cron expression read in --tz, e.g. '30 2 * * 0'"


def add_commands(commands, parser_class) -> None:
    maint = commands.add_parser(
        "maintenance", help="planned maintenance windows: no notices, no uptime counted",
        description="Inside a maintenance window sites are still checked and their results stored, "
                    "but no notice is sent and the slots count neither up nor down in uptime; the web "
                    "page and `status` show \"maintenance\". When a window ends, a notice goes out if "
                    "the state differs from the last one announced (down now but up before: `down`; "
                    "up now after a `down` notice: `up`). A glob is matched at each check, so a URL "
                    "added later under it is covered.")
    actions = maint.add_subparsers(dest="maintenance_command", metavar="ACTION", required=True,
                                   parser_class=parser_class)
    add = actions.add_parser("add", help="plan a window for a URL, a monitor's name, or a glob")
    add.add_argument("pattern", metavar="URL|NAME|GLOB",
                     help="a monitored URL, a monitor's name (its URL is covered), or a glob with * "
                          "(and ?) over URLs, e.g. 'https://*.example.com/*' (not over names)")
    add.add_argument("--start", required=True, metavar="TIME",
                     help="the first occurrence, a wall-clock time in --tz: '2026-03-29 02:30' (or ISO 8601 "
                          "with an offset)")
    add.add_argument("--duration", required=True, metavar="D", help="how long each occurrence lasts: 90s, "
                                                                     "15m, 2h, 7d (at most 366d)")
    add.add_argument("--every", metavar="day|week|CRON", help="recur: " + EVERY_HELP + ". Across "
                     "daylight-saving changes a time the clocks skip happens at the change and a "
                     "repeated time once")
    add.add_argument("--tz", metavar="ZONE", help="IANA time zone of --start and --every (default UTC), "
                                                  "e.g. Europe/Berlin")
    add.add_argument("--reason", metavar="TEXT", help="why (shown by maintenance list)")
    listing = actions.add_parser("list", help="the windows, with the next or current occurrence")
    listing.add_argument("--json", action="store_true", help="print JSON")
    remove = actions.add_parser("remove", help="delete a window (an occurrence in force ends now)")
    remove.add_argument("id", metavar="ID", help="the window's id (maintenance list)")


def prepare(args, cfg):
    """Validate the command's input before anything is opened; returns what run() needs."""
    if args.maintenance_command == "add":
        from ..alerts.cli import silence_pattern
        window = schedule.parse_window(args.start, args.duration, args.every, args.tz)
        return {"pattern": silence_pattern(args.pattern), "raw": args.pattern, "window": window,
                "reason": schedule.check_reason(args.reason)}
    if args.maintenance_command == "remove":
        if not args.id.isdecimal():
            raise BadInput(f"maintenance id must be a number (see maintenance list), got {args.id!r}")
        return int(args.id)
    return None


def run(args, cfg, conn, payload, actor: str) -> int:
    """`actor`: who the audit log says made the change (manage/audit.py)."""
    from ..manage import audit
    from . import store
    if args.maintenance_command == "add":
        pattern = payload["pattern"]
        if "*" not in pattern:          # a URL or a name: it must be monitored (exit 2 if not)
            from ..db.store import find_monitor
            pattern = find_monitor(conn, payload["raw"])[1]
        from ..alerts.cli import refuse_name_glob
        refuse_name_glob(conn, pattern)
        window_id = store.add_window(conn, pattern, payload["window"], payload["reason"],
                                     audit.on_maintenance_add(actor, pattern, describe(payload["window"]),
                                                              payload["reason"]))
        nxt = next_occurrence(payload["window"])
        when = f"first {_when(nxt[0])} UTC" if nxt else "no occurrence to come"
        print(f"maintenance {window_id}: {redact_url(pattern)}, {describe(payload['window'])}; {when}")
        return 0
    if args.maintenance_command == "remove":
        found = store.remove_window(conn, payload, audit.on_maintenance_remove(actor))
        if found is None:
            raise BadInput(f"no maintenance window with id {payload} (see maintenance list)")
        print(f"maintenance {found['id']} removed: {redact_url(found['pattern'])}")
        return 0
    rows = [listed(row, store.as_window(row)) for row in store.windows(conn)]
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("no maintenance windows")
    else:
        print(f"{'ID':>5} {'ACTIVE':6} {'NEXT (UTC)':20} {'SCHEDULE':52} {'PATTERN':40} REASON")
        for r in rows:
            nxt = r["active_until"] and f"until {r['active_until'][11:16]}" or (r["next_start"] or "-")[:16]
            print(f"{r['id']:>5} {'yes' if r['active'] else 'no':6} {nxt.replace('T', ' '):20} "
                  f"{r['schedule']:52} {r['pattern']:40} {r['reason'] or ''}")
    return 0


def describe(window: schedule.Window) -> str:
    recur = "once" if window.every is None else f"every {window.every}"
    return f"{window.start_local:%Y-%m-%d %H:%M} {window.tz} for {_duration(window.duration)}, {recur}"


def next_occurrence(window: schedule.Window, now=None):
    """(start, end) of the occurrence in force or next; a recurring window is looked for 400
    days ahead, a one-off one however far ahead it is (it was said to have none past 400)."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    horizon = now + datetime.timedelta(days=400) if window.every else datetime.datetime.max.replace(
        tzinfo=datetime.timezone.utc)
    return next(iter(window.occurrences(now, horizon)), None)


def listed(row: dict, window: schedule.Window) -> dict:
    """A window as `maintenance list --json` gives it."""
    nxt = next_occurrence(window)
    until = row["active_until"]
    return {"id": row["id"], "pattern": redact_url(row["pattern"]),
            "start": window.start_local.isoformat(), "tz": window.tz, "duration": window.duration,
            "every": window.every, "reason": row["reason"], "schedule": describe(window),
            "active": until is not None, "active_until": until.isoformat() if until else None,
            "next_start": nxt[0].isoformat() if nxt else None, "next_end": nxt[1].isoformat() if nxt else None}


def _duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _when(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M")
