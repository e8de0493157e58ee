"""Cron and interval schedules: when they tick, and which tick a worker fires now. Pure.

A tick is identified by its UTC instant in whole epoch seconds, so every process computes the
same tick, and the same job id ``cron:<name>:<tick>``, whatever its own time zone.

* **Cron expressions** (5 fields, or 6 with seconds first) tick in the schedule's IANA time
  zone; :mod:`cronsim` handles daylight saving time as Debian cron does: a daily 01:30 job fires
  once on the autumn change (at the first 01:30) and at 02:00 on the spring change, when 01:30
  does not exist (Europe/London: 2026-10-25 and 2026-03-29).
* **Intervals** (``every``) tick on whole multiples of the interval since the epoch (UTC), so
  ``every(timedelta(hours=1))`` fires on the hour, in every process alike.

Which tick to fire is decided here (:func:`due_tick`), from what the process last dealt with,
which starts at the tick the backend recorded last. A worker fires every tick that comes due
while it runs (late ones too, up to :data:`LATE_AFTER` seconds). Ticks that came due while no
worker ran were missed: with ``catch_up="skip"`` (the default) only the latest of them is fired,
and only while it is at most LATE_AFTER seconds late, so a worker that starts just after a tick
(a deploy at 01:30) still fires it, and one that starts hours later waits for the next; with
``catch_up="latest"`` the latest is fired however late (the missed run happens once, not once
per missed tick).
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from conveyor._errors import InvalidArgument
from conveyor.drivers.common import cron_job_id

LATE_AFTER: Final = 60.0  # seconds a tick may be late and still fire under catch_up="skip"
_EVERY: Final = re.compile(r"^@every (\d+)s\Z")
_NAME: Final = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]{0,199}\Z")
_MAX_INTERVAL: Final = 366 * 24 * 3600  # a year: longer intervals are cron expressions


class InvalidSchedule(InvalidArgument):
    """A schedule that cannot work: a bad expression, time zone, interval or name."""


class CatchUp(enum.StrEnum):
    """What a worker does with a tick that came due while no worker ran (downtime)."""

    SKIP = "skip"  # wait for the next tick (a tick up to LATE_AFTER seconds late still fires)
    LATEST = "latest"  # fire the latest missed tick once


class Overlap(enum.StrEnum):
    """What a tick does while the job of the previous tick has not finished."""

    ALLOW = "allow"  # fire anyway
    SKIP = "skip"  # record the tick as skipped; no job


@dataclass(frozen=True, slots=True)
class Timetable:
    """When a schedule ticks: a cron ``expression`` in zone ``tz``, or ``@every <n>s``."""

    expression: str
    tz: str = "UTC"

    def __post_init__(self) -> None:
        _zone(self.tz)
        interval = self.interval
        if interval is None:
            try:
                CronSim(self.expression, datetime.now(UTC))
            except (CronSimError, ValueError) as exc:
                raise InvalidSchedule(
                    f"invalid cron expression {self.expression!r}: {exc}; use 5 fields "
                    "(minute hour day-of-month month day-of-week, e.g. '30 1 * * *') or 6 "
                    "with seconds first"
                ) from None
            if self.next_after(0) is None:
                raise InvalidSchedule(f"cron expression {self.expression!r} never fires")
        elif not 1 <= interval <= _MAX_INTERVAL:
            raise InvalidSchedule(
                f"an interval must be from 1 second to a year, got {interval} s "
                f"({self.expression!r})"
            )

    @classmethod
    def every(cls, interval: float | timedelta) -> Timetable:
        seconds = cast(
            object, interval.total_seconds() if isinstance(interval, timedelta) else interval
        )
        if not isinstance(seconds, int | float) or isinstance(seconds, bool):
            raise InvalidSchedule(f"an interval is a timedelta or seconds, got {interval!r}")
        if not math.isfinite(seconds) or seconds != int(seconds) or seconds < 1:
            raise InvalidSchedule(
                f"an interval must be a whole number of seconds, at least 1, got {interval!r}"
            )
        return cls(f"@every {int(seconds)}s")

    @property
    def interval(self) -> int | None:
        match = _EVERY.match(self.expression)
        return None if match is None else int(match[1])

    def next_after(self, instant: float) -> int | None:
        """The first tick strictly after ``instant`` (None: none within 50 years)."""
        interval = self.interval
        if interval is not None:
            return (math.floor(instant) // interval + 1) * interval
        start = datetime.fromtimestamp(math.floor(instant), _zone(self.tz))
        try:
            return int(next(CronSim(self.expression, start)).timestamp())
        except StopIteration:
            return None

    def latest_at_or_before(self, instant: float) -> int | None:
        """The last tick at or before ``instant`` (None: none within 50 years)."""
        interval = self.interval
        if interval is not None:
            return math.floor(instant) // interval * interval
        start = datetime.fromtimestamp(math.floor(instant) + 1, _zone(self.tz))
        try:
            return int(next(CronSim(self.expression, start, reverse=True)).timestamp())
        except StopIteration:
            return None

    def describe(self) -> str:
        interval = self.interval
        if interval is None:
            return self.expression if self.tz == "UTC" else f"{self.expression} ({self.tz})"
        return "every " + _duration(interval)


def _zone(tz: str) -> ZoneInfo:
    if not isinstance(cast(object, tz), str) or not tz:
        raise InvalidSchedule(f"tz must be an IANA time zone name such as 'Europe/London': {tz!r}")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidSchedule(
            f"unknown time zone {tz!r}: use an IANA name such as 'Europe/London' or 'UTC'"
        ) from None


def _duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


tick_job_id = cron_job_id  # the id of the job a tick inserts: ``cron:<name>:<tick>``


def check_name(name: object) -> str:
    """A schedule's name: part of its jobs' ids, stable across deploys."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidSchedule(
            f"invalid schedule name {name!r}: use 1-200 letters, digits, '_', '.', ':', '-'"
        )
    return name


def due_tick(
    timetable: Timetable, catch_up: CatchUp, *, handled: int, now: float, started: float
) -> tuple[int, int | None]:
    """What a process that started at ``started`` does at ``now``, having dealt with every tick
    up to ``handled``: returns (the new ``handled``, the tick to fire or None).

    A tick that came due while the process ran is fired, each in turn, while it is at most
    :data:`LATE_AFTER` seconds late (a slow or stalled process catches up on its own ticks).
    Ticks that came due before it started, or longer ago, were missed: the catch-up policy
    decides about the latest of them alone (``skip``: fired only while at most LATE_AFTER
    late; ``latest``: fired), and the earlier ones are never fired."""
    upcoming = timetable.next_after(handled)
    if upcoming is None or upcoming > now:
        return handled, None
    if upcoming >= started and now - upcoming <= LATE_AFTER:
        return upcoming, upcoming
    latest = timetable.latest_at_or_before(now)
    if latest is None or latest <= handled:  # cannot happen: upcoming <= now is a later tick
        return handled, None
    if catch_up is CatchUp.LATEST or now - latest <= LATE_AFTER:
        return latest, latest
    return latest, None


def first_handled(recorded: int | None, now: float) -> int:
    """Where a process starts: after the tick the backend recorded last (what came due since
    then is due or missed), or, for a schedule no worker ever fired, now (a new schedule never
    fires a tick from before it existed)."""
    return recorded if recorded is not None else math.floor(now)


def next_fire(expression: str, tz: str, *, after: float) -> int | None:
    """The next tick of a registered schedule after ``after`` (for listing); None when the
    stored expression or zone cannot be read here (written by a newer version, say)."""
    try:
        return Timetable(expression, tz).next_after(after)
    except InvalidSchedule:
        return None


def describe(expression: str, tz: str) -> str:
    """A registered schedule for people: ``every 5m``, ``30 1 * * * (Europe/London)``."""
    try:
        return Timetable(expression, tz).describe()
    except InvalidSchedule:
        return expression if tz == "UTC" else f"{expression} ({tz})"
