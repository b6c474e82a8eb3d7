"""The only module that runs SQL (migrations aside): the queries in queries.sql.

Functions take an open psycopg2 connection; the caller owns connecting,
retrying and transactions.
"""

import dataclasses
import datetime
import json
from importlib import resources

import psycopg2.errors
import psycopg2.extras

from ..check import push, pushcron
from ..errors import BadInput, Conflict, Missing
from ..redact import redact_url
from ..urlspec import UrlEntry

LISTEN_CHANNEL = "sitewatch_task"


def load_queries(package: str = "sitewatch.db", filename: str = "queries.sql") -> dict[str, str]:
    """The "-- name: NAME" blocks of a .sql file in a package (a subsystem may keep its own)."""
    text = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
    queries, name, lines = {}, None, []
    for line in text.splitlines():
        if line.startswith("-- name: "):
            if name:
                queries[name] = "\n".join(lines).strip()
            name, lines = line[len("-- name: "):].strip(), []
        elif name and not line.startswith("--"):
            lines.append(line)
    if name:
        queries[name] = "\n".join(lines).strip()
    return {k: v.rstrip(";") for k, v in queries.items()}


QUERIES = load_queries()
# The claim with its candidates: a host without a region claims only '' tasks (claim_tasks), a
# host of a region its own and the '' ones (claim_tasks_region); queries.sql claim_candidates*.
QUERIES["claim_tasks_region"] = QUERIES["claim_tasks"].replace("{candidates}", QUERIES["claim_candidates_region"])
QUERIES["claim_tasks"] = QUERIES["claim_tasks"].replace("{candidates}", QUERIES["claim_candidates"])


# --- URLs (the CLI) ---------------------------------------------------------

# `audit` arguments below: audit(cur, ...) records the change in its own transaction
# (sitewatch/manage/audit.py); this module runs the change, the caller says who made it.

def add_url(conn, entry: UrlEntry, audit=None) -> int:
    """Add a monitor; its id. Conflict when its identity is taken. audit(cur, id)."""
    with conn, conn.cursor() as cur:
        cur.execute(QUERIES["add_url"], entry.as_row())
        found = cur.fetchone()
        if found is None:
            if entry.name:
                raise Conflict(f"a monitor is already named {entry.name!r} "
                               f"(use url update to change it)", field="name")
            raise Conflict(f"already monitored: {redact_url(entry.url)} (give this one a --name to "
                           f"monitor the URL again, or use url update to change it)", field="url")
        if audit is not None:
            audit(cur, found[0])
        return found[0]


IMPORT_CHUNK = 1000    # URLs upserted (and row-locked) per transaction by import_urls
_IMPORT_TEMPLATE = ("(%(url)s, %(period)s::integer, %(regex)s::text, %(timeout)s::float8, %(method)s,"
                    " %(expected_status)s, %(max_redirects)s::integer, %(verify_tls)s::boolean,"
                    " %(failure_threshold)s::integer, %(success_threshold)s::integer, %(notify)s::text[],"
                    " %(assertions)s::text[], %(degraded)s::text[],"
                    " %(name)s::text, %(headers)s::text[], %(body)s::bytea, %(body_json)s::boolean,"
                    " %(bearer)s::text, %(client_cert)s::text, %(client_key)s::text,"
                    " %(ip_version)s::smallint, %(regions)s::text[], %(down_when)s::text)")
# One upsert per identity kind: ON CONFLICT takes one arbiter index.
_IMPORT_BY = {False: QUERIES["import_urls"].replace("{conflict}", "(url) WHERE name IS NULL"),
              True: QUERIES["import_urls"].replace("{conflict}", "(name)")}


def import_urls(conn, entries: list[UrlEntry], audit=None) -> tuple[int, int]:
    """Upsert entries, IMPORT_CHUNK per transaction; returns (inserted, updated).

    Chunked, not one transaction: the producer skips locked url rows (SKIP LOCKED), so a
    100,000-URL import held in one transaction would delay those URLs' checks until it
    committed. Entries are validated before this is called, and an upsert is idempotent:
    an import interrupted half-way is completed by running it again. A named entry is
    matched by its name (its URL may change), an unnamed one by its URL. audit(cur, the
    chunk's entries, its (was inserted,) rows): one row per chunk, in the chunk's transaction.
    """
    rows = []
    for named in (False, True):
        kind = [e for e in entries if bool(e.name) == named]
        for start in range(0, len(kind), IMPORT_CHUNK):
            chunk = [e.as_row() for e in kind[start:start + IMPORT_CHUNK]]
            with conn, conn.cursor() as cur:
                done = psycopg2.extras.execute_values(cur, _IMPORT_BY[named], chunk, template=_IMPORT_TEMPLATE,
                                                      page_size=IMPORT_CHUNK, fetch=True)
                if audit is not None:
                    audit(cur, kind[start:start + IMPORT_CHUNK], done)
                rows += done
    inserted = sum(1 for (was_inserted,) in rows if was_inserted)
    return inserted, len(rows) - inserted


def find_monitor(conn, text: str) -> tuple[int, str, str | None]:
    """(id, url, name) of the one monitor `text` names: a monitor's name, else a URL (normalised
    as at add time), which is the identity of the URL's unnamed monitor. BadInput when none
    matches, or when the URL has no unnamed monitor but several named ones (their names are
    listed). A push monitor with no name is also named by its push://NAME's NAME (DESIGN.md
    section 12: every command that takes a URL takes a name; `url show-token NAME` began it)."""
    from ..urlspec import normalise_url
    with conn.cursor() as cur:
        cur.execute(QUERIES["find_monitors"], {"name": text, "url": None})
        found = cur.fetchall()
        if found:
            return found[0]
        if "://" not in text and push.NAME.fullmatch(text):
            cur.execute(QUERIES["find_monitors"], {"name": None, "url": f"{push.SCHEME}://{text}"})
            unnamed = [row for row in cur.fetchall() if row[2] is None]
            if unnamed:
                return unnamed[0]
        try:
            url = normalise_url(text)
        except BadInput as e:
            raise BadInput(f"not monitored: no monitor is named {text!r}, nor is it a URL ({e})") from None
        cur.execute(QUERIES["find_monitors"], {"name": None, "url": url})
        found = cur.fetchall()
    if not found:
        raise BadInput(f"not monitored: {redact_url(url)}")
    unnamed = [row for row in found if row[2] is None]
    if len(found) > 1 and not unnamed:
        names = ", ".join(repr(name) for _, _, name in found)
        raise BadInput(f"{redact_url(url)} is monitored {len(found)} times: give one of their names "
                       f"instead: {names}")
    return (unnamed or found)[0]


def remove_url(conn, url_id: int, channels: list[str] | None = None, audit=None) -> int:
    """Remove a monitor by id (find_monitor); returns how many open incidents this closed (0 or 1).

    `channels`: the default channels (alerts.default_channels) for the `removed` notice of a
    URL without its own. audit(cur, the settings removed), in the same transaction.
    """
    with conn, conn.cursor() as cur:
        before = monitor_settings(cur, url_id) if audit is not None else None
        removed, closed = remove_urls(cur, [url_id], channels)
        if not removed:
            raise Missing(f"not monitored: the monitor with id {url_id} is gone")
        if audit is not None:
            audit(cur, before)
        return closed


def remove_urls(cur, ids: list[int], channels: list[str] | None) -> tuple[int, int]:
    """Remove monitors by id in the caller's transaction, as `url remove` does (open incidents
    closed, `removed` notices queued); returns (monitors removed, incidents closed)."""
    cur.execute(QUERIES["lock_removed_url"], {"ids": ids})
    cur.execute(QUERIES["remove_url"], {"ids": ids, "channels": list(channels or [])})
    removed, closed, _ = cur.fetchone()
    return removed, closed


def monitor_settings(cur, url_id: int) -> dict | None:
    """A monitor's stored settings, its row locked until the transaction ends."""
    cur.execute(QUERIES["monitor_settings"], {"id": url_id})
    row = cur.fetchone()
    if row is None:
        return None
    settings = dict(zip([column.name for column in cur.description], row, strict=True))
    if settings["body"] is not None:
        settings["body"] = bytes(settings["body"])
    return settings


def update_url(conn, url_id: int, change, audit=None) -> tuple[dict, UrlEntry]:
    """Change a monitor in place: `change(stored settings) -> UrlEntry` (raises BadInput to refuse,
    nothing written). Returns (the settings before, the entry written). audit(cur, before, entry)."""
    with conn, conn.cursor() as cur:
        before = monitor_settings(cur, url_id)
        if before is None:
            raise Missing(f"not monitored: the monitor with id {url_id} is gone")
        entry = change(before)
        try:
            cur.execute(QUERIES["update_url"], {**entry.as_row(), "id": url_id,
                                                "first_slot": pushcron.first_slot(entry.cron, entry.tz)})
        except psycopg2.errors.UniqueViolation:     # `with conn` rolls the change back
            if entry.name:
                raise Conflict(f"a monitor is already named {entry.name!r}", field="name") from None
            raise Conflict(f"already monitored without a name: {redact_url(entry.url)}", field="url") from None
        if audit is not None:
            audit(cur, before, entry)
        return before, entry


# --- apply ------------------------------------------------------------------

# The url columns `apply` compares and writes: every field of UrlEntry (each is a url column of
# the same name), so a field added to monitors is applied with no change here.
ENTRY_COLUMNS = tuple(f.name for f in dataclasses.fields(UrlEntry))
APPLY_LOCK_KEY = 0x5173_7761_7463_6a     # "sitewatcj": next to the migration and maintenance keys
APPLY_ATTEMPTS = 3      # a deadlock with a result batch, or a monitor added meanwhile: plan again
_BYTEA = 17             # pg_type oid: such columns arrive as memoryview, entries hold bytes


def _apply_query(name: str) -> str:
    return QUERIES[name].format(columns=", ".join(ENTRY_COLUMNS),
                                v_columns=", ".join(f"v.{c}" for c in ENTRY_COLUMNS),
                                set_columns=", ".join(f"{c} = v.{c}" for c in ENTRY_COLUMNS))


def _json_rows(rows: list[dict]) -> str:
    """url rows as the JSON json_populate_recordset reads: bytes as bytea's hex text."""
    return json.dumps(rows, default=lambda value: "\\x" + value.hex(), separators=(",", ":"))


def apply_monitors(conn, make_plan, channels: list[str] | None, dry_run: bool, audit=None, write_more=None):
    """Make the url table match a plan, in one transaction: all of it or nothing.

    make_plan(ENTRY_COLUMNS, current rows as (id, *ENTRY_COLUMNS) tuples) returns the plan, an
    object with `added` (UrlEntry list), `changed` ((id, UrlEntry) list) and `removed` ((id, anything) list).
    Its rows are read in the same transaction as the writes, under the apply lock; a dry run
    reads in a read-only transaction and writes nothing. `channels` as for remove_url.
    write_more(cursor, plan), when given, writes the rest of the plan in the same transaction
    (apply.py: push monitors, which pushstore.py writes). Returns the plan that was applied.
    audit(cur, plan) after the writes of a plan that changes something (not on a dry run).
    Returns the plan that was applied.
    """
    for attempt in range(1, APPLY_ATTEMPTS + 1):
        try:
            with conn, conn.cursor() as cur:
                if dry_run:
                    cur.execute("SET TRANSACTION READ ONLY")
                else:
                    cur.execute(QUERIES["apply_lock"], {"key": APPLY_LOCK_KEY})
                cur.execute(_apply_query("apply_monitors"))
                binary = [i for i, column in enumerate(cur.description) if column.type_code == _BYTEA]
                current = cur.fetchall()
                if binary:
                    current = [_bytes_in(row, binary) for row in current]
                plan = make_plan(ENTRY_COLUMNS, current)
                if not dry_run:
                    _write_plan(cur, plan, channels)
                    if write_more is not None:
                        write_more(cur, plan)
                    if audit is not None and (plan.added or plan.changed or plan.removed):
                        audit(cur, plan)
                return plan
        except (psycopg2.errors.DeadlockDetected, psycopg2.errors.UniqueViolation):
            # A result batch locked a removed monitor's rows in another order, or another
            # command added a monitor the plan adds: rolled back; read and plan again.
            if attempt == APPLY_ATTEMPTS:
                raise


def _bytes_in(row: tuple, binary: list[int]) -> tuple:
    row = list(row)
    for i in binary:
        if row[i] is not None:
            row[i] = bytes(row[i])
    return tuple(row)


def _write_plan(cur, plan, channels) -> None:
    """Set-based: one statement each for the removals, the changes and the additions."""
    if plan.removed:
        remove_urls(cur, [url_id for url_id, _ in plan.removed], channels)
    if plan.changed:
        rows = [{"id": url_id, **_entry_row(entry)} for url_id, entry in plan.changed]
        cur.execute(_apply_query("apply_update"), {"rows": _json_rows(rows)})
    if plan.added:
        cur.execute(_apply_query("apply_add"), {"rows": _json_rows([_entry_row(e) for e in plan.added])})


def _entry_row(entry: UrlEntry) -> dict:
    return {column: getattr(entry, column) for column in ENTRY_COLUMNS}   # asdict() deep-copies: slow


def list_urls(conn) -> list[dict]:
    with conn, conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute(QUERIES["list_urls"])
        return [dict(row) for row in cur.fetchall()]


# --- Producer ---------------------------------------------------------------

def enqueue_due(conn, batch: int) -> tuple[int, int, int]:
    """One producer step; returns (due, enqueued, skipped). `conn` must be in autocommit mode."""
    with conn.cursor() as cur:
        cur.execute(QUERIES["enqueue_due"], {"batch": batch})
        due, enqueued, skipped, _ = cur.fetchone()
    return due, enqueued, int(skipped)


def tasks_ready(conn, region: str, limit: int) -> int:
    """Tasks a host of `region` ('' for none) could claim now, counted up to `limit`."""
    with conn.cursor() as cur:
        cur.execute(QUERIES["tasks_ready"], {"regions": ["", region] if region else [""], "limit": limit})
        return cur.fetchone()[0]


def seconds_until_due(conn) -> float | None:
    with conn.cursor() as cur:
        cur.execute(QUERIES["seconds_until_due"])
        value = cur.fetchone()[0]
    return None if value is None else float(value)


# --- Consumer ---------------------------------------------------------------

def listen(conn) -> None:
    with conn.cursor() as cur:
        cur.execute(f"LISTEN {LISTEN_CHANNEL}")


def claim_tasks(conn, owner: str, limit: int, lease_margin: float, max_attempts: int,
                region: str = "") -> tuple[list[dict], int]:
    """(the tasks claimed, how many slots this claim recorded as `lost`); `region` is the host's."""
    # A plain cursor and zip: RealDictCursor costs several times more per row on the hot path.
    with conn.cursor() as cur:
        cur.execute(QUERIES["claim_tasks_region" if region else "claim_tasks"],
                    {"owner": owner, "limit": limit, "lease_margin": lease_margin, "max_attempts": max_attempts,
                     "region": region})
        columns = [column.name for column in cur.description]
        rows = cur.fetchall()
    lost = 0
    if rows and rows[-1][0] is None:       # the count row (queries.sql claim_tasks)
        lost = rows.pop()[1]
    return [dict(zip(columns, row, strict=True)) for row in rows], lost


# The fields of one result row given to complete_tasks, in order. The last ones may be left off
# (null): rows written before they existed, and tests, carry 11 fields; the phase timings, then
# `degraded` (null for a row built without it: tests, the claim's lost slots).
RESULT_FIELDS = ("task_id", "attempt", "owner", "started_at", "response_time_ms", "status_code",
                 "regex_matched", "ok", "error_kind", "error", "cert_days_left",
                 "dns_ms", "connect_ms", "tls_ms", "first_byte_ms", "degraded")


# Alert defaults for URLs without overrides (alerts.failure_threshold, alerts.success_threshold,
# and the default channels' names); see sitewatch/alerts/settings.py alert_defaults().
NO_ALERT_CHANNELS = {"failure_threshold": 3, "success_threshold": 2, "channels": [], "notify_degraded": True,
                     "down_when": "majority"}


def _bool_text(value) -> str:
    return "t" if value else "f"


def _time_text(value) -> str:
    return value.isoformat()   # no space, comma, brace or quote: an array element as it is


# How complete_tasks sends each column that is not text: as the text of a PostgreSQL array
# ('{1,NULL,3}'), written here. psycopg2 adapts a list element by element through its adapter
# protocol (2 us an integer, 15 a datetime): for a result row that was about 50 us, a fifth of
# a check's CPU on the curl engine, and it holds the GIL the CurlMulti loop needs. Text
# columns (owner, error_kind, error) stay lists, for psycopg2 to quote.
_ARRAY_TEXT = {"task_id": str, "attempt": str, "started_at": _time_text, "response_time_ms": repr,
               "status_code": str, "regex_matched": _bool_text, "ok": _bool_text, "cert_days_left": str,
               "dns_ms": repr, "connect_ms": repr, "tls_ms": repr, "first_byte_ms": repr, "degraded": _bool_text}


def _array_text(values, text) -> str:
    return "{" + ",".join(["NULL" if value is None else text(value) for value in values]) + "}"


def complete_tasks(conn, rows: list[tuple], alert_defaults: dict | None = None) -> list[int]:
    """Record results (tuples in RESULT_FIELDS order); returns ids refused by the lease fence.

    The batch travels as one array per column (_ARRAY_TEXT), which costs far less Python
    time than one VALUES tuple per row. The same statement moves the alert state
    (url_state, incidents, outbox) with `alert_defaults` for URLs without overrides.
    """
    if not rows:
        return []
    if len(rows[0]) < len(RESULT_FIELDS):
        missing = (None,) * (len(RESULT_FIELDS) - len(rows[0]))
        rows = [row + missing for row in rows]
    columns = {name: _array_text(column, _ARRAY_TEXT[name]) if name in _ARRAY_TEXT else list(column)
               for name, column in zip(RESULT_FIELDS, zip(*rows, strict=True), strict=True)}
    columns.update(NO_ALERT_CHANNELS)
    columns.update(alert_defaults or {})
    with conn.cursor() as cur:
        cur.execute(QUERIES["complete_tasks"], columns)
        return [task_id for (task_id,) in cur.fetchall()]


def release_tasks(conn, owner: str, task_ids: list[int], attempts: list[int] | None = None,
                  delay: float = 0.0) -> None:
    """Hand back tasks of ours (at these attempts, when given), claimable after `delay` seconds."""
    if task_ids:
        attempts = list(attempts) if attempts is not None else [None] * len(task_ids)
        with conn.cursor() as cur:
            cur.execute(QUERIES["release_tasks"], {"owner": owner, "ids": list(task_ids), "attempts": attempts,
                                                   "delay": delay})


def queue_depth(conn) -> tuple[int, int]:
    with conn.cursor() as cur:
        cur.execute(QUERIES["queue_depth"])
        return cur.fetchone()


def now(conn) -> datetime.datetime:
    with conn.cursor() as cur:
        cur.execute("SELECT now()")
        return cur.fetchone()[0]
