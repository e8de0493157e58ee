"""Cron math and the declaration of schedules: pure, no backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import BaseModel

from conveyor import InvalidArgument, PayloadValidationError, Queue, Worker, job
from conveyor.core.schedule import (
    LATE_AFTER,
    CatchUp,
    InvalidSchedule,
    Timetable,
    due_tick,
    first_handled,
    next_fire,
    tick_job_id,
)

LONDON = ZoneInfo("Europe/London")


class Cleanup(BaseModel):
    older_than_days: int


class Other(BaseModel):
    n: int


cleanup = job("sessions.cleanup", Cleanup)


def utc(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def ticks_between(timetable: Timetable, start: int, end: int) -> list[int]:
    found: list[int] = []
    at = start
    while (tick := timetable.next_after(at)) is not None and tick <= end:
        found.append(tick)
        at = tick
    return found


def test_a_london_0130_job_on_the_autumn_change_fires_once() -> None:
    nightly = Timetable("30 1 * * *", "Europe/London")
    ticks = ticks_between(nightly, utc("2026-10-24T12:00:00"), utc("2026-10-26T12:00:00"))
    # 01:30 BST on the 25th (the first 01:30; the second, GMT, is skipped), then 01:30 GMT.
    assert ticks == [utc("2026-10-25T00:30:00"), utc("2026-10-26T01:30:00")]
    assert [datetime.fromtimestamp(t, LONDON).strftime("%H:%M %Z") for t in ticks] == [
        "01:30 BST",
        "01:30 GMT",
    ]


def test_a_london_0130_job_on_the_spring_change_fires_at_0200() -> None:
    nightly = Timetable("30 1 * * *", "Europe/London")
    ticks = ticks_between(nightly, utc("2026-03-28T12:00:00"), utc("2026-03-30T12:00:00"))
    # 01:30 does not exist on the 29th: the job runs once, as the clock reaches 02:00 BST.
    assert ticks == [utc("2026-03-29T01:00:00"), utc("2026-03-30T00:30:00")]


@pytest.mark.parametrize(
    "expression", ["30 1 * * *", "*/15 * * * *", "0 9 * * MON-FRI", "0 0 1 * *", "*/10 * * * * *"]
)
@pytest.mark.parametrize("tz", ["UTC", "Europe/London", "America/New_York"])
def test_the_latest_tick_and_the_next_agree(expression: str, tz: str) -> None:
    timetable = Timetable(expression, tz)
    at = utc("2026-03-28T12:00:00")
    for _ in range(30):
        tick = timetable.next_after(at)
        assert tick is not None and tick > at
        assert timetable.latest_at_or_before(tick) == tick
        assert timetable.latest_at_or_before(tick - 1) == timetable.latest_at_or_before(at)
        at = tick + 1


def test_intervals_tick_on_multiples_since_the_epoch() -> None:
    every = Timetable.every(timedelta(minutes=5))
    assert every.expression == "@every 300s" and every.interval == 300
    assert every.next_after(1000) == 1200 and every.next_after(1200) == 1500
    assert every.latest_at_or_before(1199.9) == 900 and every.latest_at_or_before(1200) == 1200
    assert every.describe() == "every 5m"
    assert Timetable.every(90).describe() == "every 90s"
    assert Timetable("30 1 * * *", "Europe/London").describe() == "30 1 * * * (Europe/London)"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Timetable("61 * * * *"), "invalid cron expression '61 \\* \\* \\* \\*'"),
        (lambda: Timetable("* * *"), "Wrong number of fields"),
        (lambda: Timetable("0 0 30 2 *"), "invalid cron expression"),
        (lambda: Timetable("* * * * *", "Mars/Olympus"), "unknown time zone 'Mars/Olympus'"),
        (lambda: Timetable("* * * * *", ""), "tz must be an IANA time zone name"),
        (lambda: Timetable.every(0.5), "whole number of seconds, at least 1"),
        (lambda: Timetable.every(timedelta(days=400)), "from 1 second to a year"),
        (lambda: Timetable.every(float("nan")), "whole number of seconds"),
    ],
)
def test_a_bad_timetable_is_refused_with_what_was_wrong(build: object, message: str) -> None:
    with pytest.raises(InvalidSchedule, match=message):
        build()  # type: ignore[operator]


def test_due_tick_fires_each_tick_that_came_due_while_the_process_ran() -> None:
    every = Timetable.every(60)
    assert due_tick(every, CatchUp.SKIP, handled=600, now=659, started=0) == (600, None)
    assert due_tick(every, CatchUp.SKIP, handled=600, now=660.2, started=0) == (660, 660)
    # A stall of three ticks: each fires in turn, the oldest first.
    fast = Timetable.every(10)
    assert due_tick(fast, CatchUp.SKIP, handled=600, now=645, started=0) == (610, 610)
    assert due_tick(fast, CatchUp.SKIP, handled=610, now=645, started=0) == (620, 620)
    # One more than LATE_AFTER late is missed: then only the latest due tick counts.
    assert due_tick(every, CatchUp.SKIP, handled=600, now=600 + 300, started=0) == (900, 900)


def test_due_tick_after_downtime_follows_the_catch_up_policy() -> None:
    hourly = Timetable.every(3600)
    late = 7200 + LATE_AFTER + 1
    # Ticks 3600 and 7200 came due before the process started at `late`.
    assert due_tick(hourly, CatchUp.SKIP, handled=0, now=late, started=late) == (7200, None)
    assert due_tick(hourly, CatchUp.LATEST, handled=0, now=late, started=late) == (7200, 7200)
    soon = 7200 + LATE_AFTER
    assert due_tick(hourly, CatchUp.SKIP, handled=0, now=soon, started=soon) == (7200, 7200)
    every = Timetable.every(1)
    # A worker that starts after 30 s of downtime does not fire 30 ticks: only the latest.
    assert due_tick(every, CatchUp.SKIP, handled=100, now=130.5, started=130) == (130, 130)


def test_a_process_starts_after_the_recorded_tick_or_now() -> None:
    assert first_handled(1200, now=5000.5) == 1200
    assert first_handled(None, now=5000.5) == 5000


def test_next_fire_of_an_unreadable_stored_schedule_is_none() -> None:
    assert next_fire("@every 60s", "UTC", after=90) == 120
    assert next_fire("not cron", "UTC", after=90) is None


def test_worker_declarations_are_checked_when_made() -> None:
    worker = Worker(Queue.from_url("memory://"))
    scheduled = worker.cron("30 1 * * *", cleanup, Cleanup(older_than_days=30), tz="Europe/London")
    assert scheduled.name == "sessions.cleanup"
    assert scheduled.payload == b'{"older_than_days":30}'
    assert scheduled.fire(utc("2026-10-25T00:30:00")).job.id == tick_job_id(
        "sessions.cleanup", utc("2026-10-25T00:30:00")
    )
    with pytest.raises(InvalidArgument, match="declared twice"):
        worker.every(timedelta(hours=1), cleanup, Cleanup(older_than_days=1))
    worker.every(timedelta(hours=1), cleanup, Cleanup(older_than_days=1), name="cleanup.hourly")
    assert list(worker.schedules) == ["sessions.cleanup", "cleanup.hourly"]
    with pytest.raises(InvalidArgument, match="invalid cron expression"):
        worker.cron("every day", cleanup, Cleanup(older_than_days=1), name="x")
    with pytest.raises(InvalidArgument, match="unknown time zone 'Europe/Londn'"):
        worker.cron("* * * * *", cleanup, Cleanup(older_than_days=1), name="y", tz="Europe/Londn")
    with pytest.raises(InvalidArgument, match="invalid schedule name"):
        worker.cron("* * * * *", cleanup, Cleanup(older_than_days=1), name="no spaces")
    with pytest.raises(InvalidArgument, match="catch_up is 'skip' or 'latest'"):
        worker.cron("* * * * *", cleanup, Cleanup(older_than_days=1), name="z", catch_up="all")  # type: ignore[arg-type]
    with pytest.raises(PayloadValidationError, match="expected an instance of Cleanup"):
        worker.cron("* * * * *", cleanup, Other(n=1), name="w")  # type: ignore[arg-type]
    assert list(worker.schedules) == ["sessions.cleanup", "cleanup.hourly"]
