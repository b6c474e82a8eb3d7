"""The command line of push monitors: `url add push://NAME` and `url show-token NAME`.

The token is printed once, on standard output, and never stored: only its hash is
(check/push.py). So `show-token` cannot show the token again: it issues a new one.
"""

from .check import push
from .db import pushstore

SHOW_TOKEN_HELP = ("issue a new ping token for a push monitor and print its URL once; the old token "
                   "stops working (only a hash of the token is stored, so it cannot be shown again)")


def add_push_options(parser) -> None:
    """--grace, --cron, --tz: `url add`'s options for push://NAME monitors."""
    parser.add_argument("--grace", metavar="DURATION",
                     help="push:// only: how late a ping may be, and the longest run after /start, e.g. 90s, "
                          "15m, 1h (default: a fifth of the period, or of a cron schedule's shortest gap, "
                          "from 1 min to 1 h)")
    parser.add_argument("--cron", metavar="EXPR",
                     help="push:// only, instead of --period: the job's 5-field cron schedule, e.g. '0 3 * * *'; "
                          "a ping is expected after each fire time, at most --grace late")
    parser.add_argument("--tz", metavar="ZONE", help="push:// only: the IANA zone --cron is read in, e.g. "
                     "Europe/Berlin (default: UTC)")


def add_show_token_command(url_commands) -> None:
    show = url_commands.add_parser("show-token", help=SHOW_TOKEN_HELP, description=SHOW_TOKEN_HELP[0].upper()
                                   + SHOW_TOKEN_HELP[1:] + ".")
    show.add_argument("monitor", metavar="NAME", help="the push monitor: its --name, push://NAME, or NAME")


def print_ping_address(cfg, token: str) -> None:
    print(f"ping URL: {push.ping_address(token, cfg.web.base_url)}")
    if not cfg.web.base_url:
        print(f"  (a path on the web listener, web.listen = {cfg.web.listen or 'unset'}; set web.base_url "
              f"to print the address jobs reach)")
    print("  the token is shown only now; `sitewatch url show-token` replaces it")


def add(conn, cfg, entry, audit=None) -> None:
    token = push.new_token()
    pushstore.add_push(conn, entry, push.token_hash(token), audit)
    named = f" as {entry.name!r}" if entry.name else ""
    if entry.cron:
        print(f"added {entry.url}{named} (a heartbeat after each fire of {entry.cron!r} in {entry.tz}, "
              f"grace {entry.grace} s)")
    else:
        print(f"added {entry.url}{named} (a heartbeat every {entry.period} s, grace {entry.grace} s)")
    print_ping_address(cfg, token)


def show_token(conn, cfg, text: str, audit=None) -> None:
    """audit: manage/audit.py's recorder, called in the change's transaction."""
    from .db import store
    url_id, url, name = store.find_monitor(conn, text)     # a name, a URL, or push://NAME's NAME
    token = push.new_token()
    pushstore.new_token(conn, url_id, push.token_hash(token), audit)
    print(f"new token for {name or url} (the old one no longer works)")
    print_ping_address(cfg, token)


def run_import(conn, entries, audit=None) -> None:
    """`url import`: the push monitors first, in one transaction (a name taken by a checked
    monitor refuses the file before anything is written), then the others (store.import_urls).
    A new push monitor's token is not printed: the hint says how to get one. audit: as
    store.import_urls takes it."""
    from .db import store
    from .errors import BadInput
    pushes = [entry for entry in entries if push.is_push(entry.url)]
    checked = [entry for entry in entries if not push.is_push(entry.url)]
    # The checked entries' upsert matches by name: it would turn a push monitor into a checked one.
    taken = pushstore.push_names(conn, [entry.name for entry in checked if entry.name])
    if taken:
        raise BadInput(f"{taken[0]}: a monitor cannot change between push:// and a checked URL (it is a push "
                       f"monitor): remove it and add the new one")
    added, updated = pushstore.import_pushes(conn, pushes, audit) if pushes else ([], 0)
    inserted, changed = store.import_urls(conn, checked, audit)
    print(f"imported {len(entries)} URLs ({inserted + len(added)} new, {changed + updated} updated)")
    for entry in added:
        print(push.token_hint(entry))
