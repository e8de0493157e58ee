"""The worker's scheduler: fires the cron and interval schedules declared on the worker.

Every worker runs it, with no leader: a tick is fired by ``cron_fire``, which records the tick
and inserts its job in one atomic step, so however many workers fire a tick, one job is
inserted. At start the worker declares its schedules to the backend (``cron_register``, one
round trip), which also tells where each one's ticks stand; then it sleeps on its clock until
the next tick of any schedule and fires each due tick once: one round trip per tick per
process. Which tick is due, and what a missed one becomes, is decided in
:mod:`conveyor.core.schedule`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

from pydantic import BaseModel

from conveyor._definition import JobDef
from conveyor._errors import InvalidArgument
from conveyor.core.cancellation import stop_if_cancelled
from conveyor.core.clock import BackendClock, Clock
from conveyor.core.headers import encode_headers
from conveyor.core.schedule import (
    LATE_AFTER,
    CatchUp,
    InvalidSchedule,
    Overlap,
    Timetable,
    check_name,
    due_tick,
    first_handled,
    tick_job_id,
)
from conveyor.core.serialization import encode_payload
from conveyor.drivers.protocol import Driver
from conveyor.drivers.records import CronFire, CronFireStatus, CronSchedule, JobGroup, NewJob

log = logging.getLogger("conveyor.worker")

MAX_NAP: Final = 1.0  # longest sleep on the real clock (a clock that jumps is noticed soon)
RETRY_PAUSE: Final = 1.0  # after the backend failed a fire or the declaration

CatchUpName = Literal["skip", "latest"]
OverlapName = Literal["allow", "skip"]


@dataclass(frozen=True, slots=True)
class Scheduled:
    """A schedule declared on a worker, its payload validated and encoded once."""

    name: str
    timetable: Timetable
    catch_up: CatchUp
    overlap: Overlap
    definition: JobDef[Any, Any]
    payload: bytes
    group: JobGroup | None = None  # from the payload, computed once

    @property
    def declaration(self) -> CronSchedule:
        t = self.timetable
        d = self.definition
        return CronSchedule(
            self.name, d.queue, d.name, t.expression, t.tz, self.catch_up.value, self.overlap.value
        )

    def fire(self, tick: int) -> CronFire:
        d = self.definition
        job = NewJob(
            id=tick_job_id(self.name, tick),
            queue=d.queue,
            name=d.name,
            payload=self.payload,
            priority=d.priority,
            max_attempts=d.attempts,
            # A worker whose clock runs ahead fires early; the job still waits for its tick.
            run_at=float(tick),
            keep_completed=d.keep_completed,
            keep_failed=d.keep_failed,
            group=self.group,
            # The version that encoded the payload, so a later worker upgrades it, not this one.
            headers=encode_headers(d.headers),
        )
        return CronFire(self.name, tick, job, skip_if_running=self.overlap is Overlap.SKIP)


def declare(
    timetable: Timetable,
    definition: JobDef[Any, Any],
    payload: BaseModel,
    *,
    name: str | None,
    catch_up: CatchUpName | CatchUp,
    overlap: OverlapName | Overlap,
    max_payload_bytes: int,
    taken: Sequence[str],
) -> Scheduled:
    """Check a declaration whole (name, policies, payload) and build its :class:`Scheduled`."""
    if not isinstance(cast(object, definition), JobDef):
        raise InvalidSchedule(f"a schedule runs a job definition (from job()), not {definition!r}")
    chosen = check_name(definition.name if name is None else name)
    if chosen in taken:
        raise InvalidSchedule(
            f"a schedule named {chosen!r} is declared twice on this worker; give each schedule "
            f"of job {definition.name!r} its own name=..."
        )
    try:
        policy, overlapping = CatchUp(catch_up), Overlap(overlap)
    except ValueError:
        raise InvalidSchedule(
            f"schedule {chosen!r}: catch_up is 'skip' or 'latest' and overlap is 'allow' or "
            f"'skip', got catch_up={catch_up!r}, overlap={overlap!r}"
        ) from None
    data = encode_payload(definition.name, definition.payload_type, payload, max_payload_bytes)
    try:
        group = definition.group_of(payload)
    except InvalidArgument as exc:
        raise InvalidSchedule(f"schedule {chosen!r}: {exc}") from None
    return Scheduled(chosen, timetable, policy, overlapping, definition, data, group)


class Scheduler:
    """Fires ``schedules`` while the worker runs (a supervised loop)."""

    def __init__(
        self, driver: Driver, schedules: Sequence[Scheduled], *, clock: Clock, nap: float
    ) -> None:
        self._driver = driver
        self._schedules = list(schedules)
        self._clock = clock
        # On the backend's clock, sleep until the next tick (checking every MAX_NAP); on a test's
        # own clock, look again every ``nap`` seconds, since only the test moves it.
        self._nap = MAX_NAP if isinstance(clock, BackendClock) else nap
        self.handled: dict[str, int] = {}  # per schedule: the latest tick dealt with
        self.fired = 0  # ticks this process fired (for tests and logs)
        self._started = 0.0  # when the schedules were declared: earlier ticks were missed
        # The latest time at which everything due was dealt with: tests wait for it to pass
        # a moment of their fake clock, instead of sleeping.
        self.caught_up_to = float("-inf")

    def _now(self) -> float:
        now = self._clock.now()
        return time.time() if now is None else now

    async def run(self) -> None:
        if not self._schedules:
            return
        await self._declare()
        while True:
            wake = await self.tick()
            stop_if_cancelled()
            await asyncio.sleep(min(max(wake - self._now(), 0.0), self._nap))

    async def _declare(self) -> None:
        """Declare the schedules and learn where their ticks stand, retrying while the
        backend is out of reach (a worker may start before it)."""
        declarations = [s.declaration for s in self._schedules]
        while True:
            try:
                recorded = await self._driver.cron_register(declarations, now=self._clock.now())
                break
            except Exception as exc:
                log.warning("could not declare the worker's schedules: %s", exc)
            stop_if_cancelled()
            await asyncio.sleep(RETRY_PAUSE)
        now = self._started = self._now()
        for s in self._schedules:
            self.handled[s.name] = first_handled(recorded.get(s.name), now)
            log.info(
                "schedule %s: %s, next at %s",
                s.name,
                s.timetable.describe(),
                s.timetable.next_after(max(now, self.handled[s.name])),
                extra={"event": "cron", "job_name": s.definition.name, "queue": s.definition.queue},
            )

    async def tick(self) -> float:
        """Fire what is due now; return when the next tick of any schedule comes (epoch s)."""
        wake = float("inf")
        now = self._now()
        failed = False
        for s in self._schedules:
            handled, tick = due_tick(
                s.timetable,
                s.catch_up,
                handled=self.handled[s.name],
                now=self._now(),
                started=self._started,
            )
            if tick is not None:
                try:
                    await self._fire(s, tick)
                except Exception as exc:  # the tick stays due: tried again after a pause
                    log.warning("schedule %s: firing tick %d failed: %s", s.name, tick, exc)
                    wake = min(wake, self._now() + RETRY_PAUSE)
                    failed = True
                    continue
            elif handled != self.handled[s.name]:
                log.warning(
                    "schedule %s: tick %d missed (no worker ran, or it is more than %gs late)",
                    s.name,
                    handled,
                    LATE_AFTER,
                    extra={"event": "cron"},
                )
            self.handled[s.name] = handled
            upcoming = s.timetable.next_after(handled)
            if upcoming is not None:
                wake = min(wake, upcoming)
        if wake > now and not failed:  # nothing left due at `now` (a backlog goes first)
            self.caught_up_to = max(self.caught_up_to, now)
        return wake

    async def _fire(self, s: Scheduled, tick: int) -> None:
        request = s.fire(tick)
        result = await self._driver.cron_fire(request, now=self._clock.now())
        fields = {
            "event": "cron",
            "job_name": s.definition.name,
            "job_id": request.job.id,
            "queue": s.definition.queue,
            "outcome": result.status.value,
        }
        if result.status is CronFireStatus.FIRED:
            self.fired += 1
            log.info("schedule %s fired tick %d", s.name, tick, extra=fields)
        elif result.status is CronFireStatus.SKIPPED:
            log.info(
                "schedule %s skipped tick %d: the previous run has not finished",
                s.name,
                tick,
                extra=fields,
            )
        else:
            log.debug("schedule %s: tick %d was fired by another worker", s.name, tick)
