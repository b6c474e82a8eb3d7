"""The command line of a monitor's definition: the request options of `url add`, `url update`
and `check` (DESIGN.md section 12), `url update` itself, and monitor names where a command
takes a URL.

cli.py owns the commands; this module owns what a monitor's flags mean.
"""

import json
import sys

from . import requestspec
from .check import push
from .errors import BadInput
from .redact import redact_url

IP_VERSION_CHOICES = ("4", "6", "any")


class MonitorName(str):
    """A command argument that names a monitor rather than giving its URL (no '://', no '*')."""


def name_or_url(text: str):
    """A command's URL|NAME argument before the database is open: a URL is normalised (bad
    ones exit 2), anything else is a name looked up later."""
    if "://" in text:
        from .urlspec import normalise_url
        return normalise_url(text)
    return MonitorName(text)


def monitor_url(conn, value) -> str:
    """The URL a command's argument stands for: a name is looked up (one monitor, else exit 2)."""
    if isinstance(value, MonitorName):
        from .db import store
        return store.find_monitor(conn, value)[1]
    return value


def add_request_options(parser, update: bool = False, check: bool = False) -> None:
    """--name, --header, --body, --json, --bearer, --client-cert, --client-key, --ip-version
    (--method is among the check options)."""
    if update:
        parser.add_argument("--name", metavar="NAME", help="rename the monitor ('' removes its name)")
    else:
        parser.add_argument("--name", metavar="NAME",
                            help="the monitor's name, its identity instead of the URL: one URL may be "
                                 "monitored several times, each with its own name")
    parser.add_argument("--header", action="append", metavar="'NAME: VALUE'",
                        help="a request header, repeatable; ${VAR} is read from the checking host's "
                             "environment at check time" + ("; replaces a stored header of that name"
                                                            if update else ""))
    parser.add_argument("--body", metavar="TEXT|@FILE", help="the request body, or @FILE for a file's "
                        "bytes; ${VAR} allowed" + ("; '' removes it" if update else ""))
    if check:
        # `check --json` printed the result as JSON before request bodies existed: alone it
        # still does; with a value it is the JSON body, as on `url add`.
        parser.add_argument("--json", dest="json_body", metavar="TEXT", nargs="?", const=True,
                            help="a JSON request body, sent with Content-Type: application/json; "
                                 "without TEXT, print the result as JSON")
        parser.add_argument("--output-json", dest="output_json", action="store_true",
                            help="print the result as JSON (also with a --json body)")
    else:
        parser.add_argument("--json", dest="json_body", metavar="TEXT",
                            help="a JSON request body, sent with Content-Type: application/json")
    parser.add_argument("--bearer", metavar="VALUE", help="send Authorization: Bearer VALUE; use ${VAR} to "
                        "keep the token out of the database" + ("; '' removes it" if update else ""))
    parser.add_argument("--client-cert", metavar="PATH", help="client certificate (PEM) for mTLS, a path on "
                        "the checking hosts")
    parser.add_argument("--client-key", metavar="PATH", help="its private key (PEM), if not in the cert file")
    parser.add_argument("--ip-version", choices=IP_VERSION_CHOICES, help="connect over IPv4 or IPv6 only "
                        "(default: any)")
    removes = "; '' removes it" if update else ""
    parser.add_argument("--send", metavar="TEXT", help="tcp:// only: text written once connected, with "
                        "escapes \\r \\n \\t \\xHH, e.g. 'PING\\r\\n'" + removes)
    parser.add_argument("--expect", metavar="REGEX", help="tcp:// only: RE2 regex the first 1 KiB read "
                        "must match; the read stops when it does" + removes)
    if not check:       # where a monitor is checked from: nothing `check` (here, now) could use
        add_region_options(parser, update)


def add_region_options(parser, update: bool = False) -> None:
    """--regions and --down-when (DESIGN.md section 12, Regions)."""
    parser.add_argument("--regions", metavar="NAME,NAME", help="check each slot once in each of these "
                        "regions, by a host of that region" + ("; '' removes them: any one host" if update else
                                                               " (default: check.regions, empty = any one host)"))
    parser.add_argument("--down-when", metavar="any|all|majority|N", help="how many of its regions must be "
                        "down for it to be down; fewer make it partial, with no notice" +
                        ("; '' returns to alerts.down_when" if update else " (default: alerts.down_when = majority)"))


def request_options(args) -> dict:
    """The request options given on the command line (None = not given)."""
    json_body = None if args.json_body is True else args.json_body   # `check --json`: output
    return {"name": args.name, "headers": args.header, "body": requestspec.read_body_argument(args.body),
            "json": json_body, "bearer": args.bearer, "client_cert": args.client_cert,
            "client_key": args.client_key, "ip_version": args.ip_version, "send": args.send,
            "expect": args.expect, "regions": getattr(args, "regions", None),
            "down_when": getattr(args, "down_when", None)}


def warn_unset(entry, env) -> None:
    """`url add` runs where the checks may run too: say which ${VAR} is not set here, and when
    this host cannot check the monitor's kind at all (icmp:// sockets forbidden)."""
    from .check import kinds
    reason = kinds.unavailable(entry.url)
    if reason:
        print(f"sitewatch: warning: {entry.shown}: {reason}; a host like this one records no result for "
              f"it (a monitor failure)", file=sys.stderr)
    for name in requestspec.unset_variables(entry, env):
        print(f"sitewatch: warning: {entry.shown}: ${{{name}}} is not set in this environment; a host "
              f"checking it without {name} records no result (a monitor failure)", file=sys.stderr)


# --- url update ------------------------------------------------------------------------------

def add_update_command(url_commands, add_check_options) -> None:
    upd = url_commands.add_parser(
        "update", help="change a monitor in place",
        description="Change any setting of a monitor, found by its name or URL. Its history, state "
                    "and incidents stay. A new period re-slots it from now. Options not given keep "
                    "their stored values.")
    upd.add_argument("monitor", metavar="URL|NAME", help="the monitor's name, or its URL")
    upd.add_argument("--url", dest="new_url", metavar="URL", help="check this URL from now on")
    upd.add_argument("-p", "--period", metavar="SECONDS", help="seconds between checks")
    upd.add_argument("--grace", metavar="DURATION", help="push:// only: how late a ping may be (a new period "
                     "or grace starts a new slot now)")
    upd.add_argument("--cron", metavar="EXPR", help="push:// only: a cron schedule instead of the period (a "
                     "new schedule starts at its next fire time; --period switches back)")
    upd.add_argument("--tz", metavar="ZONE", help="push:// only: the zone --cron is read in")
    upd.add_argument("-r", "--regex", metavar="REGEX", help="RE2 regex the body must contain ('' removes it)")
    add_check_options(upd)
    upd.add_argument("--failure-threshold", metavar="N", help="consecutive failed checks that turn it down")
    upd.add_argument("--success-threshold", metavar="N", help="consecutive good checks that turn it up")
    upd.add_argument("--notify", metavar="NAME,NAME", help="channels to notify")
    add_request_options(upd, update=True)
    upd.add_argument("--no-header", action="append", metavar="NAME", help="remove a stored header, repeatable")
    upd.add_argument("--no-assert", action="append", metavar="EXPR",
                     help="remove a stored assert or degraded expression (as `url list --json` shows it), repeatable")
    for action in upd._actions:      # the add defaults do not apply: what is not given stays
        if action.help and " (default: " in action.help:
            action.help = action.help.split(" (default: ")[0]


# Stored columns that are options of make_entry under the same name.
_STORED = ("url", "period", "regex", "timeout", "method", "expected_status", "max_redirects", "verify_tls",
           "failure_threshold", "success_threshold", "notify", "name", "headers", "bearer", "client_cert",
           "client_key", "ip_version", "grace", "cron", "tz", "regions", "down_when")
# Those a push monitor has (the others keep their column defaults, and are no options of it).
_PUSH_STORED = ("url", "period", "failure_threshold", "success_threshold", "notify", "name", "grace", "cron", "tz")


def prepare_update(args):
    """The changes asked for, checked on their own before the database is opened (exit 2)."""
    if args.period is not None and args.cron is not None:
        raise BadInput("give a push monitor a period or a cron schedule, not both")
    changes = {"url": args.new_url, "period": args.period, "grace": args.grace, "cron": args.cron, "tz": args.tz,
               "regex": args.regex,
               "timeout": args.timeout,
               "method": args.method, "expected_status": args.expected_status,
               "max_redirects": args.max_redirects, "verify_tls": args.verify_tls,
               "failure_threshold": args.failure_threshold, "success_threshold": args.success_threshold,
               "notify": args.notify, **request_options(args)}
    changes = {key: value for key, value in changes.items() if value is not None}
    if changes.get("headers"):
        changes["headers"] = requestspec.validate_headers(changes["headers"])
    removed = [name.strip().lower() for name in args.no_header or []]
    # --assert and --degraded add to the stored lists; --no-assert removes from them.
    added = {"assert": args.assertions or [], "degraded": args.degraded or []}
    no_assert = [text.strip() for text in args.no_assert or []]
    if not changes and not removed and not any(added.values()) and not no_assert:
        raise BadInput("nothing to change: give at least one option (see sitewatch url update --help)")
    return {"monitor": name_or_url(args.monitor), "changes": changes, "no_header": removed,
            "added": added, "no_assert": no_assert}


def _expressions(stored: dict, added: dict, no_assert: list[str]) -> dict:
    """The monitor's assert and degraded lists after the change."""
    lists = {"assert": list(stored["assertions"] or []), "degraded": list(stored["degraded"] or [])}
    for text in no_assert:
        if not any(text in items for items in lists.values()):
            raise BadInput(f"--no-assert {text}: the monitor has no such assert or degraded expression")
        lists = {key: [item for item in items if item != text] for key, items in lists.items()}
    return {key: items + [text for text in added[key] if text not in items] for key, items in lists.items()}


def expressions_of(stored: dict) -> dict:
    """The monitor's stored assert and degraded lists, as options."""
    return _expressions(stored, {"assert": [], "degraded": []}, [])


def merged_options(stored: dict, changes: dict, no_header: list[str]) -> dict:
    """The options of the monitor after the change: stored values, overridden by those given."""
    if push.is_push(stored["url"]):
        options = {key: stored[key] for key in _PUSH_STORED}
        if options["cron"] is not None:
            options["period"] = None        # derived from the schedule (check/pushcron.py)
        if "period" in changes:             # a period replaces the cron schedule...
            options["cron"] = options["tz"] = None
        elif "cron" in changes:             # ...and a schedule the period (UTC unless --tz)
            options["period"] = None
            if options["cron"] is None:
                options["tz"] = None
        options.update(changes)
        return options
    options = {key: stored[key] for key in _STORED}
    if stored["ip_version"] is None:
        options["ip_version"] = "any"
    if stored["body_json"] and stored["body"] is not None:
        options["json"] = stored["body"].decode("utf-8")
    else:
        options["body"] = stored["body"]
    headers = list(stored["headers"] or [])
    for name in no_header:
        if not any(requestspec.header_name(line) == name for line in headers):
            raise BadInput(f"--no-header {name}: the monitor has no such header")
        headers = [line for line in headers if requestspec.header_name(line) != name]
    given = dict(changes)
    new_headers = given.pop("headers", None) or []
    replaced = {requestspec.header_name(line) for line in new_headers}
    options["headers"] = [line for line in headers if requestspec.header_name(line) not in replaced] + new_headers
    if "body" in given or "json" in given:
        options.pop("body", None)
        options.pop("json", None)
    from .check import kinds
    if kinds.scheme_of(given.get("url", stored["url"])) not in kinds.HTTP_SCHEMES:
        # A tcp:// monitor's send and expect are stored in body and regex: give them back as such.
        options["send"], options["expect"] = options.pop("body", None), options.pop("regex")
    options.update(given)
    for key in ("regex", "body", "bearer", "name", "client_cert", "client_key", "send", "expect"):
        if options.get(key) == "":
            options[key] = None
    return options


def run_update(conn, cfg, payload, env, check_channels_known, audit=None) -> int:
    from .check import kinds
    from .db import store
    from .urlspec import make_entry
    url_id = store.find_monitor(conn, payload["monitor"])[0]

    def change(stored):
        if push.is_push(payload["changes"].get("url", stored["url"])) != push.is_push(stored["url"]):
            raise BadInput("a monitor cannot change between push:// and a checked URL: remove it and add "
                           "the new one")
        options = merged_options(stored, payload["changes"], payload["no_header"])
        if not push.is_push(stored["url"]):
            options.update(_expressions(stored, payload["added"], payload["no_assert"]))
        elif payload["no_header"] or payload["no_assert"] or any(payload["added"].values()):
            raise BadInput("a push monitor has no headers or assertions")
        entry = make_entry(options, cfg.check)
        check_channels_known([entry], cfg)
        return entry

    before, entry = store.update_url(conn, url_id, change, audit)
    warn_unset(entry, env)
    changed = [key for key in (*_STORED, "body", "body_json", "assertions", "degraded")
               if before[key] != entry.as_row()[key] and not (key == "headers" and not before[key]
                                                               and not entry.headers)]
    if not kinds.is_http(entry.url):    # a tcp:// monitor's body and regex are its send and expect
        changed = [{"body": "send", "regex": "expect"}.get(key, key) for key in changed]
    shown = ", ".join(changed) or "nothing"
    if entry.cron and before["cron"] == entry.cron and before["tz"] == entry.tz:
        changed = [key for key in changed if key != "period"]   # the schedule's longest gap, recomputed
    resloted = " (re-slotted from now)" if {"period", "grace", "cron", "tz"} & set(changed) else ""
    print(f"updated {entry.shown}: {shown}{resloted}")
    return 0


def push_schedule(row: dict) -> str:
    """A push monitor's schedule for `url list`: its cron expression and zone (its PERIOD is only
    the longest gap between fires) and its grace; '' for a checked monitor."""
    if row.get("grace") is None:
        return ""
    cron = f"cron '{row['cron']}' {row['tz']}, " if row.get("cron") else ""
    return f"[{cron}grace {row['grace']} s]"


def print_settings_line(shown: dict) -> str:
    """The request options of a `url list` row (url_list_rows: redacted), or '' when it has none."""
    parts = []
    if shown["method"] not in (None, "GET"):
        parts.append(shown["method"])
    parts += [f"[{line}]" for line in shown["headers"]]
    if shown["bearer"]:
        parts.append(f"bearer {shown['bearer']}")
    if shown["body"] is not None:
        parts.append(("json " if shown["json"] else "body ") + repr(shown["body"])[:60])
    if shown.get("send") is not None:
        parts.append("send " + repr(shown["send"])[:60])
    if shown["client_cert"]:
        parts.append(f"cert {shown['client_cert']}")
    if shown["ip_version"]:
        parts.append(f"IPv{shown['ip_version']}")
    return " ".join(parts)


def url_list_rows(rows: list[dict]) -> list[dict]:
    """`url list` rows with every secret out (redact.py's URL rules, requestspec's header rules)."""
    from .check import kinds
    out = []
    for row in rows:
        row = dict(row)
        row["url"] = redact_url(row["url"])
        row.update(requestspec.shown_settings(row))
        row.pop("body_json", None)
        row["send"] = row["expect"] = None
        if not kinds.is_http(row["url"]):   # a tcp:// monitor's send and expect live in body and regex
            row["send"], row["body"] = row["body"], None
            row["expect"], row["regex"] = row["regex"], None
        out.append(row)
    return out


def print_url_list(rows, as_json: bool) -> None:
    rows = url_list_rows(rows)
    if as_json:
        print(json.dumps(rows, default=lambda v: v.isoformat() if hasattr(v, "isoformat") else str(v),
                         indent=2))
        return
    if not rows:
        print("no URLs monitored; add one with: sitewatch url add URL")
        return
    print(f"{'URL':50} {'PERIOD':>6} {'LAST CHECK (UTC)':20} {'STATE':8} {'CODE':>4} {'MS':>7}  "
          f"{'REGEX / ERROR'}")
    for r in rows:
        degraded = bool(r["last_ok"] and r["last_degraded"])    # ok, but a `degraded` expression failed
        if r["last_started_at"] is None:
            state, code, ms, last = "-", "-", "-", "never"
        else:
            state = "DEGRADED" if degraded else "UP" if r["last_ok"] else "DOWN"
            code = r["last_status_code"] if r["last_status_code"] is not None else "-"
            ms = f"{r['last_response_time_ms']:.0f}" if r["last_response_time_ms"] is not None else "-"
            last = r["last_started_at"].strftime("%Y-%m-%d %H:%M:%S")
        detail = (f"{r['last_error_kind']}: {r['last_error']}" if r["last_error_kind"]
                  else f"degraded: {r['last_error']}" if degraded
                  else f"/{r['regex']}/" if r["regex"] else f"expect /{r['expect']}/" if r["expect"] else "")
        request = " ".join(part for part in (push_schedule(r), print_settings_line(r)) if part)
        shown = f"{r['url']} ({r['name']})" if r["name"] else r["url"]
        print(f"{shown:50} {r['period']:>6} {last:20} {state:8} {code!s:>4} {ms:>7}  {detail}"
              + (f"  {request}" if request else ""))
