"""Which URL `sitewatch history` exports: a monitored URL, a removed one, or an id.

A removed URL's results stay until retention (README), but its `url` row is gone: only its
id (task_result.url_id, the rollups) and, if it ever had an incident, its text as the
incident keeps it (redacted: userinfo and query string as `***`) remain. So a removed URL is
found by its id, or by its text through its incidents.
"""

from ..errors import BadInput
from ..redact import redact_url

_MONITORED = "SELECT id FROM url WHERE url = %s"
# Incidents keep the URL as alert_redact_url made it; the newest id first.
_BY_INCIDENT = """
    SELECT url_id FROM incident WHERE url = alert_redact_url(%s)
      AND NOT EXISTS (SELECT 1 FROM url WHERE url.id = incident.url_id)
    GROUP BY url_id ORDER BY max(started_at) DESC"""
_KNOWN_ID = """
    SELECT EXISTS (SELECT 1 FROM url WHERE id = %(id)s)
        OR EXISTS (SELECT 1 FROM task_result WHERE url_id = %(id)s)
        OR EXISTS (SELECT 1 FROM rollup_hour WHERE url_id = %(id)s)
        OR EXISTS (SELECT 1 FROM rollup_day WHERE url_id = %(id)s)
        OR EXISTS (SELECT 1 FROM incident WHERE url_id = %(id)s)"""


def is_id(text: str) -> bool:
    """A URL id (ASCII digits), not a URL."""
    return text.isascii() and text.isdigit()


def history_url_id(conn, text: str) -> int:
    """The url_id whose history to export; BadInput (exit 2) when nothing is known of it.

    An id is taken as is if any row of it remains (a monitored URL, raw results, rollups or
    incidents). A URL is the monitored one, else the removed URL whose incidents name it;
    two removed URLs with the same redacted text are told apart by their ids.
    """
    from ..urlspec import normalise_url
    with conn.cursor() as cur:
        if is_id(text):
            url_id = int(text)
            cur.execute(_KNOWN_ID, {"id": url_id})
            if not cur.fetchone()[0]:
                raise BadInput(f"no URL with id {url_id}, monitored or removed")
            return url_id
        url = normalise_url(text)
        cur.execute(_MONITORED, (url,))
        row = cur.fetchone()
        if row is not None:
            return row[0]
        cur.execute(_BY_INCIDENT, (url,))
        found = [url_id for (url_id,) in cur.fetchall()]
    if len(found) == 1:
        return found[0]
    if found:
        raise BadInput(f"{redact_url(url)} names several removed URLs (ids {', '.join(map(str, found))}): "
                       f"give the id instead")
    raise BadInput(f"not monitored: {redact_url(url)} (a removed URL is found by its id, or by its URL "
                   f"if it had an incident)")
