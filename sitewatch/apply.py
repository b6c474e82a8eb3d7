"""`sitewatch apply FILE|-`: make the monitors match a file, and say what that changes.

The file is the `url import` format, read by the same parser (manage/importfile.py). A
monitor's identity is its name when it has one, else its URL (DESIGN.md section 12). The
plan compares every field of UrlEntry with the stored row, so a field added to monitors is
applied without a change here; a field the file leaves out means its default, so taking
`regex:` out of the file is a change to no regex. store.apply_monitors owns the transaction.
"""

import json
import sys
from dataclasses import dataclass, field
from operator import attrgetter

from . import requestspec
from .check import push
from .errors import BadInput
from .redact import REDACTED, printable, redact_url
from .urlspec import UrlEntry

SHOWN_LENGTH = 80       # a plan line shows at most this much of a value (bodies may be 1 MB)
# How a stored field is called in the file (urlspec.OPTION_NAMES): `assert` is stored as
# `assertions`; the others as written with '-' for '_'.
_LABELS = {"assertions": "assert"}


@dataclass
class Plan:
    """What apply changes: the store writes added, changed and removed; lines are printed."""

    added: list[UrlEntry] = field(default_factory=list)
    changed: list[tuple[int, UrlEntry]] = field(default_factory=list)     # (url id, the new settings)
    removed: list[tuple[int, str]] = field(default_factory=list)          # (url id, how it is shown)
    lines: list[str] = field(default_factory=list)
    # push:// monitors are written by db/pushstore.py (a token, a slot), not by the store's plan.
    pushes_added: list[UrlEntry] = field(default_factory=list)
    pushes_changed: list[tuple[int, UrlEntry]] = field(default_factory=list)


def add_command(commands) -> None:
    """The `apply` command's arguments (cli.py owns the commands; this module, what apply does)."""
    parser = commands.add_parser(
        "apply", help="make the monitors match a file: add, update, and with --prune remove",
        description="Make the monitors match FILE (or - for stdin), in the `url import` format with every "
                    "option: monitors it names are added or changed in place (history, state and incidents "
                    "stay; a new period re-slots from now); with --prune, monitors it does not name are "
                    "removed (their open incidents closed, as `url remove` does). A monitor is named by its "
                    "`name`, else by its URL. A key left out of an entry means its default. Prints one line "
                    "per change (`+ NAME`, `~ NAME: FIELD OLD -> NEW`, `- NAME`; secrets redacted), or "
                    "`no changes`. Every entry is validated first; all of it is written in one transaction, "
                    "or nothing. Exit 2 on a bad entry, naming it and its line.")
    parser.add_argument("file", metavar="FILE", help="path, or - for standard input")
    parser.add_argument("--prune", action="store_true", help="also remove monitors the file does not name")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")


def make_plan(entries: list[UrlEntry], columns: tuple[str, ...], current: list[tuple], prune: bool) -> Plan:
    """Compare the file's entries with the stored monitors (rows of (id, *columns)).

    Additions and changes come in file order, then the removals (only with `prune`) by name.
    """
    name_at, url_at = columns.index("name") + 1, columns.index("url") + 1
    stored = {row[name_at] or row[url_at]: row for row in current}
    values = attrgetter(*columns)
    plan = Plan()
    for entry in entries:
        is_push = push.is_push(entry.url)
        row = stored.pop(entry.identity, None)
        if row is None:
            (plan.pushes_added if is_push else plan.added).append(entry)
            plan.lines.append(f"+ {printable(entry.shown)}")
            continue
        if is_push != push.is_push(row[url_at]):
            raise BadInput(f"{entry.shown}: a monitor cannot change between push:// and a checked URL "
                           f"(it is {redact_url(row[url_at])}): remove it from the file, apply, then add it back")
        new = values(entry)
        if new == row[1:]:          # the usual case, compared at C speed
            continue
        # A push monitor's other columns keep their defaults: they are no settings of it. A cron
        # one's period is derived from its schedule (the longest gap in the coming year), so it
        # is no setting either: `url update` does not show it, nor does the plan.
        settings = push.SETTINGS if not entry.cron else tuple(c for c in push.SETTINGS if c != "period")
        differences = [(column, old, value) for column, old, value in zip(columns, row[1:], new, strict=True)
                       if _comparable(old) != _comparable(value) and (not is_push or column in settings)]
        if differences:
            (plan.pushes_changed if is_push else plan.changed).append((row[0], entry))
            plan.lines += [f"~ {printable(entry.shown)}: {_LABELS.get(column, column.replace('_', '-'))} "
                           f"{shown_value(column, old)} -> {shown_value(column, value)}"
                           for column, old, value in differences]
    if prune:
        gone = sorted((_shown_row(row, name_at, url_at), row[0]) for row in stored.values())
        plan.removed = [(url_id, shown) for shown, url_id in gone]
        plan.lines += [f"- {shown}" for shown, _ in gone]
    return plan


def _comparable(value):
    """An empty list and none are the same setting (validate_headers stores none for no
    headers; a row written by hand may hold '{}')."""
    return None if value == [] else value


def _shown_row(row, name_at: int, url_at: int) -> str:
    return printable(row[name_at] or redact_url(row[url_at]))


def shown_value(column: str, value) -> str:
    """A setting as a plan line shows it, with every secret out: the URL's userinfo and query
    (redact_url), the values of Authorization, Cookie and Proxy-Authorization headers, the
    bearer, and anything holding `${` (requestspec's rules, as `url list` shows them)."""
    if value is None:
        return "none"
    value = requestspec.shown_value(column, value)
    text = value if value == REDACTED else json.dumps(value, ensure_ascii=False)
    text = printable(text)
    return text if len(text) <= SHOWN_LENGTH else text[:SHOWN_LENGTH - 3] + "..."


def plan_and_apply(conn, entries: list[UrlEntry], channels: list[str], prune: bool, dry_run: bool,
                   audit=None) -> Plan:
    """Plan and (unless dry_run) apply in one transaction (store.apply_monitors); the plan.
    `channels`: alerts' default channels, for `removed` notices; audit(cur, plan) records it."""
    from .db import store
    return store.apply_monitors(conn, lambda columns, current: make_plan(entries, columns, current, prune),
                                channels, dry_run, audit, write_more=_write_pushes)


def run(conn, entries: list[UrlEntry], channels: list[str], prune: bool, dry_run: bool, audit=None) -> int:
    """`sitewatch apply`: plan_and_apply, then print the plan: one line per change, or `no changes`."""
    plan = plan_and_apply(conn, entries, channels, prune, dry_run, audit)
    sys.stdout.write("\n".join(plan.lines or ["no changes"]) + "\n")
    if dry_run and plan.lines:
        print("sitewatch: dry run: nothing written", file=sys.stderr)
    elif not dry_run:       # on stderr: standard output stays one line per change
        for entry in plan.pushes_added:
            print(f"sitewatch: {push.token_hint(entry)}", file=sys.stderr)
    return 0


def _write_pushes(cur, plan: Plan) -> None:
    """The plan's push monitors, in the apply's transaction: new ones with no token shown."""
    from .db import pushstore
    for entry in plan.pushes_added:
        pushstore.insert_push(cur, entry)
    for url_id, entry in plan.pushes_changed:
        pushstore.update_push(cur, url_id, entry)
