"""Confirmation checks (issue 21, DESIGN.md section 12, Regions): the other regions' second
opinion at a first failure, as Pingdom asks a second probe.

Without them, each region of a URL moves its own state only at its own slots, so an outage is
down failure_threshold periods after it begins. With them, when a (URL, region)'s streak of
failures begins (up, unknown or degraded to failing), every present region of the URL checks
it at once, the failing one included: each result counts toward its region's threshold as a
regular one does, so with failure_threshold 2 the URL is down a few seconds after its first
failed slot, about one period after the outage began. A blip that the re-checks do not see
ends its streak instead.

The work is in SQL, in the result's own transaction (db/migrations/0016_region_confirm.sql:
alert_apply_region_results collects the first failures, alert_confirm_regions enqueues):

* a confirmation is a task like a slot's, claimed by a host of its region (one of many, by
  task's UNIQUE (url_id, region) and the claim's SKIP LOCKED: exactly once per region);
* its scheduled_at is when it was asked for, never one of the URL's slots (t0 + kP), so it
  never takes the key (url_id, scheduled_at, region) of a regular slot; uptime and history
  count it as one more check, at that time;
* only a regular slot's failure asks (a confirmation asks no one), and at most one per URL
  and region per period (url_region_state.confirm_slot);
* a region with a task outstanding for the URL, or absent, is not asked.

This module reads them back: which results of a URL were confirmations.
"""

import datetime

# A result is a confirmation when its scheduled_at is off the URL's slot grid (next_check_at
# + kP). True while the URL keeps its schedule: `url update` with a new period re-slots it.
CONFIRMATIONS = """
SELECT t.region, t.scheduled_at, t.ok, t.error_kind
FROM task_result t JOIN url u ON u.id = t.url_id
WHERE t.url_id = %(id)s AND t.scheduled_at >= %(since)s AND t.region <> ''
  AND mod(floor(extract(epoch FROM t.scheduled_at - u.next_check_at) * 1000000)::bigint,
          u.period::bigint * 1000000) <> 0
ORDER BY t.scheduled_at, t.region
"""


def confirmations(conn, url_id: int, since: datetime.datetime) -> list[tuple]:
    """[(region, scheduled_at, ok, error_kind)] of the confirmation checks of one URL since
    `since`, oldest first."""
    with conn.cursor() as cur:
        cur.execute(CONFIRMATIONS, {"id": url_id, "since": since})
        found = cur.fetchall()
    if not conn.autocommit:
        conn.rollback()
    return found
