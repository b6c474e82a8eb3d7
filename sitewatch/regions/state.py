"""Each (URL, region)'s state as the readers show it (DESIGN.md section 12, Regions): the
`regions` map of `status --json`, the table's "down from a, b", and the web page's and the
API's row per region. Read-only; the states themselves are moved by the alerts' SQL
(db/migrations/regions.sql and 0016_region_confirm.sql)."""

import datetime

from ..db.store import load_queries

QUERIES = load_queries("sitewatch.regions", "queries.sql")

ABSENT = "absent"      # no live host in the region: left out of the quorum, shown as such


def region_states(conn, ids: list[int] | None) -> dict[int, dict[str, dict]]:
    """{url_id: {region: {state, since, last_error_kind, last_error}}} of the URLs with regions
    among `ids` (or all), regions in the URL's order. A URL without regions has no entry.
    One statement whatever the number of URLs (status of 100,000 reads them at once)."""
    with conn.cursor() as cur:
        cur.execute(QUERIES["region_states"], {"ids": ids or [], "all": ids is None})
        rows = cur.fetchall()
    if not conn.autocommit:
        conn.rollback()
    found: dict[int, dict[str, dict]] = {}
    for url_id, region, state, since, error_kind, error in rows:
        found.setdefault(url_id, {})[region] = {
            "state": state, "since": since, "last_error_kind": error_kind, "last_error": error}
    return found


def region_p95(conn, url_id: int, since: datetime.datetime) -> dict[str, float]:
    """{region: p95 response time in ms of its results since `since`} of one URL."""
    with conn.cursor() as cur:
        cur.execute(QUERIES["region_p95"], {"id": url_id, "since": since})
        found = {region: round(p95, 1) for region, p95 in cur.fetchall()}
    if not conn.autocommit:
        conn.rollback()
    return found


def summary_text(regions: dict[str, dict]) -> str:
    """What the status table says of a URL's regions: 'down from a, b; absent c' ('' when no
    region is down or absent)."""
    down = [name for name, r in regions.items() if r["state"] == "down"]
    absent = [name for name, r in regions.items() if r["state"] == ABSENT]
    parts = ([f"down from {', '.join(down)}"] if down else []) + ([f"absent {', '.join(absent)}"] if absent else [])
    return "; ".join(parts)


def jsonable(regions: dict[str, dict]) -> dict[str, dict]:
    """The map as `status --json` and the API print it: times in ISO 8601 UTC (errors as stored,
    as the URL's own last_error: JSON escapes them)."""
    return {name: {"state": r["state"],
                   "since": r["since"].astimezone(datetime.timezone.utc).isoformat() if r["since"] else None,
                   "last_error_kind": r["last_error_kind"],
                   "last_error": r["last_error"]}
            for name, r in regions.items()}
