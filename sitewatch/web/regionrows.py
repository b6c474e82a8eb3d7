"""The URL page's and the API's rows per region (DESIGN.md section 12, Regions): each region of a
URL with regions, its state (absent when it has no live host), since when, uptime over 24 h
(7 d and 30 d in the API), p95 response time over the page's 24 hours, and its latest error
while failing. A map-free table: the region's name says where. The figures come from
sitewatch.regions.state and history.regionuptime, as `status` shows them."""

import datetime

from ..history import regionuptime
from ..redact import printable
from ..regions import state as regionstate

WINDOW = datetime.timedelta(hours=24)       # the page's response-time window (its "p95 24 h")


def for_url(conn, url_id: int, now: datetime.datetime, down_when: str = "majority") -> list[dict]:
    """[{region, state, since, p95_ms_24h, last_error_kind, last_error, uptime_24h, uptime_7d,
    uptime_30d}] in the URL's order of regions; [] for a URL without regions. `down_when` is
    alerts.down_when (regionuptime.for_urls reads the quorum figure with the regions')."""
    regions = regionstate.region_states(conn, [url_id]).get(url_id)
    if not regions:
        return []
    p95 = regionstate.region_p95(conn, url_id, now - WINDOW)
    figures = regionuptime.for_urls(conn, [url_id], down_when).get(url_id, {})
    # printable: an error quotes what a site sent (as the URL's own last_error in the API)
    return [{"region": name, **r, "last_error": None if r["last_error"] is None else printable(r["last_error"]),
             "p95_ms_24h": p95.get(name), **regionuptime.uptimes(figures.get(name))}
            for name, r in regions.items()]


def api_fields(rows: list[dict]) -> dict:
    """The API's `regions`, a map from region to its row, as `status --json` prints it (its
    uptimes included) plus the p95; nothing for a URL without regions (as `status --json`)."""
    if not rows:
        return {}
    shown = regionstate.jsonable({r["region"]: r for r in rows})
    return {"regions": {r["region"]: {**shown[r["region"]], "p95_ms_24h": r["p95_ms_24h"],
                                      **{f"uptime_{w}": r[f"uptime_{w}"] for w in regionuptime.WINDOWS}}
                        for r in rows}}
