"""When a maintenance window is in force: its occurrences, in UTC, as pure functions.

A window starts at a wall-clock time in its zone (`--start`, `--tz`, default UTC) and lasts
`--duration` of elapsed time. A recurring one (`--every day|week|CRON`) is a cron expression
in its zone: `day` is `M H * * *` and `week` `M H * * DOW` from the start, so every kind
follows the zone's clock across daylight-saving changes exactly as push cron does
(check/pushcron.next_fire): a 02:30 in the hour skipped in spring happens at the change
(03:00), and a fixed 02:30 in the hour repeated in autumn happens once, at the first one.
Neither vanishes nor doubles. The first occurrence is the first fire at or after `--start`.
A one-off window at a wall time the zone skips is refused (there is no such moment).
"""

import datetime
from dataclasses import dataclass

from ..check import pushcron
from ..duration import seconds as parse_seconds
from ..errors import BadInput

UTC = datetime.timezone.utc
MAX_DURATION = 366 * 86400
MAX_REASON = 500
MAX_OCCURRENCES = 2000      # written per window per plan (a cron firing every minute: a day and more)


@dataclass(frozen=True)
class Window:
    start_local: datetime.datetime      # naive wall-clock time in tz
    tz: str
    duration: int                       # seconds
    every: str | None                   # None, 'day', 'week' or a 5-field cron expression

    def cron(self) -> str | None:
        """The cron expression this window recurs by (None: once)."""
        if self.every is None:
            return None
        minute, hour = self.start_local.minute, self.start_local.hour
        if self.every == "day":
            return f"{minute} {hour} * * *"
        if self.every == "week":
            return f"{minute} {hour} * * {self.start_local.isoweekday() % 7}"
        return self.every

    def start_utc(self) -> datetime.datetime:
        """--start as an instant (a wall time repeated in autumn is the first of the two)."""
        return self.start_local.replace(tzinfo=pushcron.zone(self.tz), fold=0).astimezone(UTC)

    def occurrences(self, since: datetime.datetime, until: datetime.datetime):
        """(start, end) in UTC of the occurrences in force after `since` that start before
        `until` (both aware), oldest first, at most MAX_OCCURRENCES."""
        first = self.start_utc()
        length = datetime.timedelta(seconds=self.duration)
        expr = self.cron()
        if expr is None:
            if first + length > since and first < until:
                yield first, first + length
            return
        # fires from whichever is later: --start, or the earliest start still in force at `since`
        after = max(first, since - length) - datetime.timedelta(microseconds=1)
        for count, when in enumerate(pushcron.fires(expr, self.tz, after)):
            if when >= until or count >= MAX_OCCURRENCES:
                return
            if when + length > since:
                yield when, when + length


def parse_window(start: str, duration: str, every: str | None, tz: str | None) -> Window:
    """The command's options -> a Window; BadInput (one line) for anything wrong."""
    tz = "UTC" if tz is None else tz
    pushcron.zone(tz)
    start_local = parse_start(start, tz)
    seconds = parse_seconds(duration)
    if not 1 <= seconds <= MAX_DURATION or seconds != int(seconds):
        raise BadInput(f"--duration must be whole seconds from 1s to 366d, got {duration!r}")
    if every is not None:
        every = " ".join(every.split())
        if every not in ("day", "week"):
            if start_local.second:
                raise BadInput("--start of a cron window has no seconds (cron fires on whole minutes)")
            every = pushcron.validate(every, tz)[0]
        elif start_local.second:
            raise BadInput(f"--start of a window every {every} has no seconds (it recurs on whole minutes)")
    window = Window(start_local, tz, int(seconds), every)
    if every is None and window.start_utc().astimezone(pushcron.zone(tz)).replace(tzinfo=None) != start_local:
        raise BadInput(f"--start {start_local:%Y-%m-%d %H:%M} does not exist in {tz} (the clocks skip it)")
    return window


def parse_start(text: str, tz: str) -> datetime.datetime:
    """'2026-03-29 02:30' or '2026-03-29T02:30[:SS]' (wall time in tz), or one with an offset
    or Z (converted to tz) -> a naive wall time in tz."""
    raw = text.strip()
    try:
        when = datetime.datetime.fromisoformat(raw[:-1] + "+00:00" if raw.endswith(("Z", "z")) else raw)
    except ValueError:
        raise BadInput(f"--start must be a date and time such as '2026-03-29 02:30' (in --tz), "
                       f"got {text!r}") from None
    if len(raw) <= 10:      # a date alone reads as midnight: too easy to get wrong, refused
        raise BadInput(f"--start needs a time of day too, e.g. '{raw} 02:30', got {text!r}")
    if when.tzinfo is not None:
        when = when.astimezone(pushcron.zone(tz)).replace(tzinfo=None)
    return when.replace(microsecond=0)


def check_reason(reason: str | None) -> str | None:
    if reason is not None and (len(reason) > MAX_REASON or not reason.isprintable()):
        raise BadInput(f"--reason must be one line of at most {MAX_REASON} printable characters")
    return reason
