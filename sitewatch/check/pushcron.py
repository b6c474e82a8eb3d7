"""Cron schedules of push monitors: `url add push://NAME --cron EXPR --tz ZONE`.

A sibling of push.py (which owns fixed-rate heartbeats and the pings' meaning): this module owns
the schedule (validating it, its fire times in its zone) and the slot rules of a cron monitor,
as pure functions. db/pushstore.py writes what they decide.

Slots (following Healthchecks' cron checks: a ping is expected after each fire time, at most
`grace` late). Slot k is the fire time t_k, in UTC; `url.push_slot` is the oldest fire time
with no result (the cursor), as for a fixed-rate monitor, and `url.next_check_at` the moment it
is missed:

* its deadline is t_k + grace (or an open /start run's start + grace, if earlier);
* a success ping at or after t_k settles slot t_k (the job ran and reported); one before t_k
  settles nothing (slot t_{k-1} has its result: the job ran twice, or early);
* a failure ping settles the cursor slot at once, even before t_k (never dropped);
* past the deadline with no ping, the producer records slot t_k `missed` (db/pushstore.py);
* when no producer ran and several deadlines passed, a ping settles the latest fire at or
  before it, and the producer the latest fire whose deadline passed; the slots before are
  skipped and counted, as enqueue_due does after an outage.

Fire times come from croniter in the monitor's zone, so a daily 02:30 job follows the zone's
clock across daylight-saving changes. Like Debian's cron, a fire time in the hour skipped in
spring is at the change (croniter moves 02:30 to 03:00), and a fixed-time job in the hour
repeated in autumn fires once, at the first 02:30; a job with `*` as its hour fires in both.

`url.period` of a cron monitor is the longest gap between its fires (over the next year, at
most MAX_FIRES fires): what `status` coverage divides by, so it counts whole longest gaps and
never reports a job that keeps its schedule below 100 %.
"""

from datetime import datetime, timedelta, timezone

from ..errors import BadInput

MAX_FIRES = 3000                 # fires looked at for the schedule's gaps (every minute: two days)
HORIZON = timedelta(days=400)    # ...or this far ahead, whichever is first
MAX_GAP = 366 * 86400            # a yearly job is a heartbeat too; rarer ones are refused
MAX_SKIPPED_COUNT = 100_000      # fires counted one by one after an outage; past this, jumped over


def zone(name: str):
    """A ZoneInfo for an IANA name; BadInput when unknown, or when this host has no zone data."""
    import zoneinfo
    if not isinstance(name, str) or not name or len(name) > 100:
        raise BadInput(f"tz must be an IANA time zone name such as Europe/Berlin, got {name!r}")
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        if not zoneinfo.available_timezones():
            raise BadInput(f"time zone {name!r}: this host has no time zone data (install the tzdata "
                           f"package, e.g. apt-get install tzdata or pip install tzdata)") from None
        raise BadInput(f"unknown time zone {name!r} (an IANA name such as Europe/Berlin or UTC)") from None


def _fixed_hour(expr: str) -> bool:
    """Whether the hour field names hours (not `*` or `*/N`): such a job fires once in a repeated hour."""
    return not expr.split()[1].startswith("*")


def next_fire(expr: str, tz_name: str, after: datetime) -> datetime:
    """The first fire time strictly after `after` (aware), in UTC."""
    from croniter import croniter
    tz = zone(tz_name)
    after = after.astimezone(timezone.utc)
    start = after.astimezone(tz)
    it = croniter(expr, start)
    while True:
        fire = it.get_next(datetime)
        when = fire.astimezone(timezone.utc)
        if when <= after:
            continue        # croniter maps a skipped 02:30 to 03:00 twice, say: strictly later only
        if fire.fold and _fixed_hour(expr) and fire.replace(fold=0).utcoffset() != fire.utcoffset():
            continue        # the repeated hour's second 02:30: a fixed-time job already ran at the first
        return when


def fires(expr: str, tz_name: str, after: datetime):
    """Fire times after `after`, in UTC, one by one."""
    when = after
    while True:
        when = next_fire(expr, tz_name, when)
        yield when


def first_slot(expr: str | None, tz_name: str | None) -> datetime | None:
    """A new cron monitor's first slot: its next fire time from now (None: not a cron monitor)."""
    return next_fire(expr, tz_name, datetime.now(timezone.utc)) if expr else None


def validate(expr, tz_name, now: datetime | None = None) -> tuple[str, str, int, int]:
    """A 5-field cron expression and a zone -> (expression, zone, shortest gap, longest gap in
    seconds). BadInput for a bad expression or zone, or one that fires less than twice a year."""
    from croniter import CroniterBadDateError, croniter
    if not isinstance(expr, str) or len(expr.split()) != 5 or not croniter.is_valid(expr.strip()):
        raise BadInput(f"cron must be a 5-field cron expression (minute hour day month weekday), "
                       f"e.g. '0 3 * * *', got {expr!r}")
    expr = " ".join(expr.split())
    tz_name = "UTC" if tz_name is None else tz_name
    zone(tz_name)
    now = now or datetime.now(timezone.utc)
    gaps, previous = [], None
    try:
        for count, when in enumerate(fires(expr, tz_name, now)):
            if previous is not None:
                gaps.append((when - previous).total_seconds())
            if count >= MAX_FIRES or when - now > HORIZON:
                break
            previous = when
    except CroniterBadDateError:        # e.g. 0 0 30 2 *: no such day
        gaps = []
    if not gaps or max(gaps) > MAX_GAP:
        raise BadInput(f"cron {expr!r} must fire at least once a year (a heartbeat needs a schedule)")
    return expr, tz_name, int(min(gaps)), int(max(gaps))


def deadline(slot: datetime, grace: int, started_at: datetime | None) -> datetime:
    """When the cursor slot is missed: its fire time plus grace, or an open run's start plus
    grace if earlier."""
    due = slot + timedelta(seconds=grace)
    return min(due, started_at + timedelta(seconds=grace)) if started_at else due


def _latest(expr: str, tz_name: str, cursor: datetime, until: datetime) -> tuple[datetime, int]:
    """The latest fire time from `cursor` (a fire time) up to `until`, and how many fire times
    lie between them (the slots skipped)."""
    latest, skipped = cursor, 0
    for when in fires(expr, tz_name, cursor):
        if when > until:
            return latest, skipped      # the cursor and those after it, but the latest
        latest, skipped = when, skipped + 1
        if skipped > MAX_SKIPPED_COUNT:     # a long outage of an every-minute job: jump to the end
            from croniter import croniter
            prev = croniter(expr, until.astimezone(zone(tz_name))).get_prev(datetime)
            return max(prev.astimezone(timezone.utc), latest), skipped


def settle_ping(expr: str, tz_name: str, grace: int, cursor: datetime, now: datetime,
                signal: str) -> tuple[datetime | None, datetime, int]:
    """A ping at `now` (push.START, SUCCESS or FAILURE) -> (the slot it settles or None, the
    new cursor, slots skipped)."""
    from . import push
    if signal == push.START:
        return None, cursor, 0
    if cursor + timedelta(seconds=grace) <= now:       # past the deadline: no producer ran
        slot, skipped = _latest(expr, tz_name, cursor, now)
    elif signal == push.FAILURE or cursor <= now:
        slot, skipped = cursor, 0
    else:
        return None, cursor, 0      # a success before the cursor's fire time: that slot's is in
    return slot, next_fire(expr, tz_name, slot), skipped


def settle_missed(expr: str, tz_name: str, grace: int, cursor: datetime,
                  now: datetime) -> tuple[datetime, datetime, int]:
    """The producer's missed slot when the deadline passed -> (the slot recorded missed, the new
    cursor, slots skipped): the latest fire time whose fire time + grace passed, at least the
    cursor (an overrun /start run settles the cursor slot even before its deadline)."""
    slot, skipped = _latest(expr, tz_name, cursor, now - timedelta(seconds=grace))
    return slot, next_fire(expr, tz_name, slot), skipped
