"""The `sitewatch` command: parse arguments, load configuration, dispatch.

The only module that reads sys.argv and os.environ. Bad input exits 2 with one
line on stderr before anything is written; runtime failures exit 1.
"""

import argparse
import gc
import importlib
import os
import sys
import traceback

from . import __version__, checkcli, config, logs, monitorcli, pushcli
from .check import kinds, push
from .errors import EXIT_BAD_INPUT, EXIT_FAILURE, BadInput, SitewatchError
from .manage import importfile
from .manage.entries import check_channels_known
from .redact import redact_text, redact_url

# The kinds of monitor, by URL scheme (check/kinds.py; README "Monitor kinds").
URL_HELP = (f"what to monitor, a URL of scheme {kinds.schemes_text()}: e.g. https://example.com/, "
            f"tcp://HOST:PORT (connect; --send, --expect), tls://HOST:PORT (a TLS handshake); or, for "
            f"url add, push://NAME: a heartbeat the job pings (prints its ping URL; see README, push://)")


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2."""

    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="sitewatch",
        description="Monitor the availability of many websites; results go to PostgreSQL. "
                    "With no database.dsn configured, an embedded PostgreSQL is started in "
                    "database.data_dir.",
        epilog="Configuration: defaults < YAML file < environment (SITEWATCH_<SECTION>__<KEY>, and DB_DSN, "
               "DB_TIMEOUT, MIN_PERIOD, MAX_PERIOD, HTTP_REQUEST_TIMEOUT) < flags. "
               "See config.example.yaml. Exit codes: 0 ok, 1 runtime failure, 2 bad input.")
    p.add_argument("--version", action="version", version=f"sitewatch {__version__}")
    p.add_argument("--config", metavar="PATH", help="YAML configuration file (default: $SITEWATCH_CONFIG, "
                   "else ./sitewatch.yaml when present, else built-in defaults)")
    p.add_argument("--log-format", choices=["console", "json", "ecs"],
                   help="log format: ecs is Elastic Common Schema JSON (default: log.format = auto: console "
                        "on a terminal, JSON otherwise)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                   help="log level (default: log.level = info); debug also shows tracebacks")
    commands = p.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=ArgumentParser)

    run = commands.add_parser("run", help="run the producer, consumers, maintenance job, notifier and web "
                                          "server until SIGTERM/SIGINT",
                              description="Start one producer, N consumer processes, the maintenance job "
                                          "(partitions, rollups, retention), the alert notifier and the "
                                          "web server (web.listen; empty = none), supervise and "
                                          "restart them. SIGTERM/SIGINT: graceful stop (a second SIGINT "
                                          "stops at once). SIGHUP: reload the configuration, restart "
                                          "children. Serves /metrics, /healthz and /readyz on "
                                          "metrics.listen (default 127.0.0.1:9464; empty = off).")
    run.add_argument("--consumers", type=int, metavar="N",
                     help="consumer processes (default: consumer.processes, unset = number of CPUs)")
    run.add_argument("--concurrency", type=int, metavar="N",
                     help="most checks in flight per consumer, a ceiling (default: consumer.concurrency = 2500)")

    url = commands.add_parser("url", help="manage monitored URLs", description="Manage monitored URLs.")
    url_commands = url.add_subparsers(dest="url_command", metavar="ACTION", required=True,
                                      parser_class=ArgumentParser)
    add = url_commands.add_parser("add", help="monitor a URL", description="Monitor a URL. Its first check "
                                  "is due at once; then every PERIOD seconds.")
    add.add_argument("url", metavar="URL", help=URL_HELP)
    add.add_argument("-p", "--period", metavar="SECONDS",
                     help="seconds between checks (default: check.default_period = 60; "
                          "within check.min_period..check.max_period, default 5..300); push://: the job's "
                          "period, also 90s, 15m, 2h, 1d (default 1d, at most 31d)")
    pushcli.add_push_options(add)
    add.add_argument("-r", "--regex", metavar="REGEX",
                     help="RE2 regular expression the body must contain (default: none)")
    add_check_options(add)
    monitorcli.add_request_options(add)
    add.add_argument("--failure-threshold", metavar="N", help="consecutive failed checks that turn it "
                     "down (default: alerts.failure_threshold = 3)")
    add.add_argument("--success-threshold", metavar="N", help="consecutive good checks that turn it up "
                     "again (default: alerts.success_threshold = 2)")
    add.add_argument("--notify", metavar="NAME,NAME", help="channels to notify, names from alerts.channels "
                     "(default: alerts.default_channels, unset = all)")

    monitorcli.add_update_command(url_commands, add_check_options)
    pushcli.add_show_token_command(url_commands)

    remove = url_commands.add_parser("remove", help="stop monitoring a URL",
                                     description="Stop monitoring a URL. Its pending task is dropped; its "
                                                 "results stay in task_result.")
    remove.add_argument("url", metavar="URL|NAME", help="the monitor's name, or its URL as added")

    listing = url_commands.add_parser("list", help="list URLs with their last result",
                                      description="List monitored URLs, their settings and last result "
                                                  "(userinfo and query strings redacted).")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")

    imp = url_commands.add_parser("import", help="add or update many URLs from a file",
                                  description="Upsert URLs from FILE (or - for stdin): a YAML list of "
                                              "entries with keys url, name, period, regex, timeout, method, "
                                              "headers, body, json, bearer, client-cert, client-key, "
                                              "ip-version, send, expect, expected-status, max-redirects, verify-tls, "
                                              "failure-threshold, success-threshold, notify, and for "
                                              "push://NAME grace, cron, tz (missing keys "
                                              "take the defaults; a named entry is matched by its name), "
                                              "or one URL per line. Every entry is "
                                              "validated before anything is written. First checks are "
                                              "spread across each URL's period.")
    imp.add_argument("file", metavar="FILE", help="path, or - for standard input")

    from . import apply  # its module owns its arguments too
    from .manage import audit
    apply.add_command(commands)
    audit.add_command(commands)

    chk = commands.add_parser("check", help="check one URL now and print the result (no database)",
                              description="Run one check exactly as the consumers do and print the "
                                          "result. Exit 0 when up, 1 when down.")
    chk.add_argument("url", metavar="URL", help=URL_HELP)
    chk.add_argument("-r", "--regex", metavar="REGEX", help="RE2 regex the body must contain (default: none)")
    add_check_options(chk)
    monitorcli.add_request_options(chk, check=True)

    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", metavar="ACTION", required=True,
                                    parser_class=ArgumentParser)
    db_commands.add_parser("migrate", help="apply schema migrations (idempotent)",
                           description="Bring the database schema to this version of sitewatch. "
                                       "Safe to run at any time, also concurrently.")
    db_commands.add_parser("maintain", help="run the maintenance job once now (partitions, rollups, retention)",
                           description="One run of the job `sitewatch run` does every history.interval "
                                       "seconds: create task_result partitions ahead, roll up complete "
                                       "hours and days, drop raw partitions past history.raw_days and "
                                       "rollups past their retention. For cron and tests; safe while "
                                       "`sitewatch run` runs anywhere (one run at a time; a concurrent "
                                       "one skips).")

    status = commands.add_parser("status", help="state, uptime and response time of each URL",
                                 description="One line per URL: state (from the alerts' state when present, "
                                             "else the latest results), since when, uptime over 24 h / 7 d / "
                                             "30 d (truncated, never rounded up; - when there is no data), "
                                             "coverage (results / expected slots) over 24 h, p95 response "
                                             "time over 24 h, certificate days left, the latest check's "
                                             "error (led by 'down from a, b' for a URL with regions; --json "
                                             "adds a `regions` map from region to its state, last error and "
                                             "uptime). A URL with regions: its uptime counts each slot once, "
                                             "down by its down_when over the regions that reported for it. "
                                             "Given one URL, also an hour-by-hour bar and its last 10 failures.")
    status.add_argument("urls", metavar="URL|NAME", nargs="*", help="monitors to show, by URL or name (default: all)")
    status.add_argument("--json", action="store_true", help="print a JSON list of objects")
    status.add_argument("--down", action="store_true", help="only URLs that are down")

    history = commands.add_parser("history", help="export one URL's results as CSV or JSON lines",
                                  description="Results of one URL, oldest first: raw results while they are "
                                              "kept (history.raw_days), hourly rollups further back; the "
                                              "`source` column says which (raw|hourly). A removed URL's "
                                              "results are kept too: give its id, or its URL if it had an "
                                              "incident. No data: prints nothing, exit 0. Unknown URL: exit 2.")
    history.add_argument("url", metavar="URL|ID")
    history.add_argument("--since", metavar="DURATION|TIME", default="24h",
                         help="start: a duration back from now (90s, 15m, 2h, 7d) or an ISO 8601 time "
                              "(UTC unless it has an offset) (default: 24h)")
    history.add_argument("--until", metavar="TIME", help="end, exclusive: a time or a duration back (default: now)")
    history.add_argument("--format", choices=["csv", "json"], default="csv",
                         help="csv (with a header row) or json (one object per line) (default: csv)")
    history.add_argument("--region", metavar="REGION",
                         help="only the results checked from this region: its hourly rollups (checks "
                              "and failures) where raw rows are no longer kept, then its raw results; "
                              "column `region` is empty without regions")

    for subsystem in ("alerts", "maintenance_windows"):      # each adds its own commands
        importlib.import_module(f"sitewatch.{subsystem}.cli").add_commands(commands, ArgumentParser)

    web = commands.add_parser("web", help="serve the status page, JSON API and badges",
                              description="Run the web server alone (the same one `sitewatch run` starts "
                                          "as its web child), against any sitewatch database. It writes "
                                          "only push:// pings and, with a web.tokens token of scope write, "
                                          "the write API's changes. SIGTERM/SIGINT stop it.")
    web.add_argument("--listen", metavar="ADDR",
                     help="HOST:PORT to listen on (default: web.listen = 127.0.0.1:8080)")

    cfg = commands.add_parser("config", help="configuration")
    cfg_commands = cfg.add_subparsers(dest="config_command", metavar="ACTION", required=True,
                                      parser_class=ArgumentParser)
    cfg_commands.add_parser("show", help="print the effective configuration and where each value comes from",
                            description="Print every setting, its value and its source (default, file, "
                                        "env, flag). Passwords are redacted.")
    return p


def add_check_options(parser) -> None:
    parser.add_argument("--timeout", metavar="SECONDS",
                        help="total deadline of one check (default: check.timeout = 10)")
    parser.add_argument("--method", metavar="METHOD",
                        help="GET HEAD POST PUT PATCH DELETE or OPTIONS (default: GET)")
    parser.add_argument("--expected-status", metavar="CODES",
                        help="status codes counted as up, e.g. 200-299,301 "
                             "(default: check.expected_status = 200-399)")
    parser.add_argument("--max-redirects", metavar="N",
                        help="redirects followed at most (default: check.max_redirects = 5)")
    parser.add_argument("--verify-tls", action=argparse.BooleanOptionalAction, default=None,
                        help="verify TLS certificates (default: check.verify_tls = true)")
    add_assertion_options(parser)


def add_assertion_options(parser) -> None:
    parser.add_argument("--assert", dest="assertions", metavar="EXPR", action="append",
                        help="an expression that must hold, e.g. 'json $.status == \"ok\"' (repeatable; "
                             "README \"Assertions\")")
    parser.add_argument("--degraded", metavar="EXPR", action="append",
                        help="an expression whose failure makes an up result degraded, e.g. "
                             "'response_time < 800' (repeatable)")


def check_options(args) -> dict:
    return {"url": args.url, "regex": args.regex, "timeout": args.timeout, "method": args.method,
            "expected_status": args.expected_status, "max_redirects": args.max_redirects,
            "verify_tls": args.verify_tls, "assert": args.assertions, "degraded": args.degraded}


def main(argv=None, env=None) -> int:
    env = dict(os.environ if env is None else env)
    args = build_parser().parse_args(argv)
    debug = args.log_level == "debug"
    try:
        flags = {
            "log.level": (args.log_level, "--log-level"),
            "log.format": (args.log_format, "--log-format"),
        }
        if args.command == "run":
            flags["consumer.processes"] = (args.consumers, "--consumers")
            flags["consumer.concurrency"] = (args.concurrency, "--concurrency")
        if args.command == "web":
            flags["web.listen"] = (args.listen, "--listen")
        # only `run` and `web` serve web.tokens: they alone refuse one that does not resolve
        cfg = config.load(env, flags, args.config, serves_web=args.command in ("run", "web"))
        debug = cfg.log.level == "debug"
        logs.configure(cfg.log.level, cfg.log.format, role="cli")
        return dispatch(args, cfg, env, flags)
    except SitewatchError as e:
        if debug:
            print(redact_text(traceback.format_exc()), file=sys.stderr, end="")
        # One line, always: a message quoting user input may carry a newline.
        print(f"sitewatch: error: {' '.join(str(e).split())}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # a bug: say so in one line, traceback only when asked
        from .operations import sentry
        sentry.capture_current()   # `run` with sentry.dsn: the bug is reported (scrubbed)
        sentry.flush()
        if debug:
            print(redact_text(traceback.format_exc()), file=sys.stderr, end="")
        print(f"sitewatch: internal error: {type(e).__name__}: {' '.join(redact_text(str(e)).split())}"
              f" (run with --log-level debug for a traceback)", file=sys.stderr)
        return EXIT_FAILURE


def dispatch(args, cfg, env, flags) -> int:
    if args.command == "config":
        print("\n".join(cfg.show()))
        for warning in cfg.warnings():
            print(f"sitewatch: warning: {warning}", file=sys.stderr)
        return 0
    if args.command == "check":
        if push.is_push(args.url):
            raise BadInput("a push:// monitor is not checked by sitewatch: its job pings it (url add prints how)")
        return checkcli.run(args, cfg, {**check_options(args), **monitorcli.request_options(args)})
    if args.command == "run":
        from .run.supervisor import run
        return run(cfg, config_path=args.config, env=env, cli_flags=flags)
    if args.command == "web":
        return cmd_web(cfg)

    # Validate everything the user gave before the database is even opened.
    if args.command == "url" and args.url_command == "add":
        from .urlspec import make_entry
        options = check_options(args)
        options["period"] = args.period
        options["grace"] = args.grace
        options.update(cron=args.cron, tz=args.tz)
        options.update(failure_threshold=args.failure_threshold, success_threshold=args.success_threshold,
                       notify=args.notify)
        options.update(monitorcli.request_options(args))
        payload = make_entry(options, cfg.check)
        check_channels_known([payload], cfg)
        monitorcli.warn_unset(payload, env)
    elif args.command == "url" and args.url_command == "update":
        payload = monitorcli.prepare_update(args)
    elif args.command == "url" and args.url_command == "remove":
        payload = monitorcli.name_or_url(args.url)
    elif args.command == "url" and args.url_command == "show-token":
        payload = args.monitor
    elif args.command == "apply" or (args.command == "url" and args.url_command == "import"):
        payload = importfile.read_import(args.file, cfg.check)
        check_channels_known(payload, cfg)
    elif args.command in ("status", "history"):
        payload = read_report_args(args)
    elif args.command == "notify":
        from .alerts import cli as alerts_cli
        from .manage import audit
        code, results = alerts_cli.notify_test(args, cfg)
        audit.record_notify_test(lambda action: with_database(cfg, action), audit.cli_actor(env), results)
        return code
    elif args.command in SUBSYSTEM_COMMANDS:
        payload = subsystem_cli(args).prepare(args, cfg)
    else:
        payload = None
    return with_database(cfg, lambda *opened: run_db_command(args, cfg, payload, env, *opened),
                         migrate=args.command == "db" and args.db_command == "migrate")


# commands whose subsystem's cli module validates (prepare) and runs (run) them
SUBSYSTEM_COMMANDS = {"incidents": "alerts", "silence": "alerts", "maintenance": "maintenance_windows"}


def subsystem_cli(args):
    return importlib.import_module(f"sitewatch.{SUBSYSTEM_COMMANDS[args.command]}.cli")


def read_report_args(args):
    """Check a report's arguments before the database is opened: bad ones exit 2."""
    import datetime

    from .history import lookup, report
    from .urlspec import normalise_url
    for url in getattr(args, "urls", None) or [getattr(args, "url", None)] * (args.command == "history"):
        if not (args.command == "history" and lookup.is_id(url)) and "://" in url:  # an id, a name
            normalise_url(url)
    if args.command == "history":
        now = datetime.datetime.now(datetime.timezone.utc)
        report.parse_time(args.since, "--since", now)
        if args.until:
            report.parse_time(args.until, "--until", now)
    return None


def with_database(cfg, action, migrate: bool = False) -> int:
    """Run action(conn, applied migrations, connect) on the configured database; connect()
    opens one more connection to it (closed by the caller).

    Only `db migrate` (and `run`) upgrade an existing schema: a `url list` from a newer
    laptop must not migrate a database that older hosts are running against. An empty
    database is set up on the spot, so the zero-setup path needs no extra command.
    """
    from .db import schema
    from .db.database import Database
    from .errors import Failure
    db = Database.open(cfg)
    try:
        conn = db.connect("cli")
        try:
            version = schema.check_version(conn)
            if migrate or version == 0:
                applied = schema.migrate(conn)
            elif version < schema.LATEST_VERSION:
                raise Failure(f"the database schema is at version {version}, this sitewatch needs "
                              f"{schema.LATEST_VERSION}: run `sitewatch db migrate`")
            else:
                applied = []
            return action(conn, applied, lambda: db.connect("cli"))
        finally:
            conn.close()
    finally:
        db.close()


def run_db_command(args, cfg, payload, env, conn, applied, connect) -> int:
    from .db import schema, store
    from .manage import audit
    actor = audit.cli_actor(env)
    if args.command == "db" and args.db_command == "maintain":
        from .history import maintenance
        summary = maintenance.run_once(conn, cfg)
        print("skipped: another process is running the maintenance job" if summary is None else
              " ".join(f"{key}={value}" for key, value in summary.items()))
        return 0
    if args.command in ("status", "history"):
        return run_report(args, conn, connect, cfg.alerts.down_when)
    if args.command in SUBSYSTEM_COMMANDS:
        return subsystem_cli(args).run(args, cfg, conn, payload, actor)
    if args.command == "apply":
        from . import apply
        from .alerts.settings import default_channels
        return apply.run(conn, payload, default_channels(cfg), args.prune, args.dry_run,
                         audit.on_apply(actor, args.prune))
    if args.command == "audit":
        return audit.print_rows(audit.rows(conn, args.limit, args.since), args.json)
    if args.command == "db":
        done = f"applied {', '.join(applied)}" if applied else "nothing to apply"
        print(f"database schema at version {schema.check_version(conn)}: {done}")
        return 0
    if args.url_command == "add" and push.is_push(payload.url):
        pushcli.add(conn, cfg, payload, audit.on_add(actor, payload))
    elif args.url_command == "show-token":
        pushcli.show_token(conn, cfg, payload, audit.on_new_token(actor, payload))
    elif args.url_command == "add":
        store.add_url(conn, payload, audit.on_add(actor, payload))
        named = f" as {payload.name!r}" if payload.name else ""
        regex = "regex" if kinds.is_http(payload.url) else "expect"     # a tcp:// monitor's regex
        print(f"added {redact_url(payload.url)}{named} (every {payload.period} s"
              f"{f', {regex} ' + repr(payload.regex) if payload.regex else ''})")
    elif args.url_command == "remove":
        from .alerts.settings import default_channels
        url_id, url, name = store.find_monitor(conn, payload)
        closed = store.remove_url(conn, url_id, default_channels(cfg), audit.on_remove(actor))
        print(f"removed {name or redact_url(url)}" + (" (its open incident is closed: url removed)" if closed else ""))
    elif args.url_command == "update":
        return monitorcli.run_update(conn, cfg, payload, env, check_channels_known, audit.on_update(actor))
    elif args.url_command == "import":
        pushcli.run_import(conn, payload, audit.on_import(actor))
    elif args.url_command == "list":
        monitorcli.print_url_list(store.list_urls(conn), args.json)
    return 0


def run_report(args, conn, connect, down_when: str = "majority") -> int:
    from .db import store
    from .history import report
    report.configure_session(conn)
    if args.command == "status":
        # 100,000 URLs make about a million small objects, none in a cycle: the cyclic
        # collector would walk them over and over (a quarter of the time) for nothing.
        gc.disable()
        # Each argument names one monitor (a URL of several is refused, naming them).
        ids = [store.find_monitor(conn, u)[0] for u in args.urls] or None
        lines = report.status_lines(conn, ids, args.json, args.down, connect)
        if lines is None:      # no usable summary: the figures computed in Python
            rows = report.status_rows(conn, ids, connect)
            if args.down:
                rows = [(url_id, row) for url_id, row in rows if row["state"] == "down"]
            lines = report.lines_of(rows, args.json)
        lines = report.with_regions(conn, lines, ids, args.json, down_when)
        report.print_status_lines(conn, lines, args.json)
        return 0
    from .history import lookup
    url_id = lookup.history_url_id(conn, monitored_id(conn, args.url))   # monitored, removed, or an id
    now = store.now(conn)     # the database's clock, like scheduled_at
    since = report.parse_time(args.since, "--since", now)
    until = report.parse_time(args.until, "--until", now) if args.until else now
    try:
        rows = report.history_rows(conn, url_id, since, until, report.parse_region(args.region))
        report.print_history(rows, args.format)
        sys.stdout.flush()
    except BrokenPipeError:   # `sitewatch history URL | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def monitored_id(conn, text: str) -> str:
    """`history`'s argument as an id when it names one monitor (by name, or a URL monitored once);
    as given otherwise (an id, or a removed URL, found by history/lookup.py)."""
    from .db import store
    from .history import lookup
    if lookup.is_id(text):
        return text
    try:
        return str(store.find_monitor(conn, text)[0])
    except BadInput as e:
        if str(e).startswith("not monitored") and "://" in text:
            return text
        raise


def cmd_web(cfg) -> int:
    """`sitewatch web`: bind first (a taken address is bad input, exit 2), then serve."""
    from .db import schema
    from .db.database import Database
    from .errors import Failure
    from .web import server
    if not cfg.web.listen.strip():
        raise BadInput("web.listen is empty: give an address with --listen HOST:PORT")
    sock = server.bind(cfg.web.listen)
    db = Database.open(cfg)
    try:
        conn = db.connect("web")
        try:
            version = schema.check_version(conn)
        finally:
            conn.close()
        if version < schema.LATEST_VERSION:
            raise Failure(f"the database schema is at version {version}, this sitewatch needs "
                          f"{schema.LATEST_VERSION}: run `sitewatch db migrate` (the web does not migrate)")
        return server.run_alone(cfg, db.dsn, sock)
    finally:
        sock.close()
        db.close()


def entry_point() -> None:
    sys.exit(main())
