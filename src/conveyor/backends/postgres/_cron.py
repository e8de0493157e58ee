"""Schedules on PostgreSQL: ``cron_register``, ``cron_fire`` and ``cron_list`` (queries in
``cron.sql``). A fire is one statement, so one round trip: it claims the tick in
``conveyor_cron`` only while the recorded tick is older, and inserts the tick's job in the same
statement only when the claim fired (see the query's comment)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any, Final

from conveyor.backends.postgres._pool import Connections
from conveyor.backends.postgres._sql import in_schema, parse_queries
from conveyor.drivers.common import (
    check_cron_fire,
    check_cron_schedules,
    check_now,
    cron_info_of,
)
from conveyor.drivers.records import (
    CronFire,
    CronFireResult,
    CronFireStatus,
    CronInfo,
    CronSchedule,
)

_TEXT: Final = (
    resources.files("conveyor.backends.postgres").joinpath("cron.sql").read_text(encoding="utf-8")
)
_QUERIES: Final = parse_queries(_TEXT)


class Cron:
    """The schedule operations of one PostgreSQL driver."""

    def __init__(self, quoted_schema: str, channel: str) -> None:
        self._q = {name: in_schema(text, quoted_schema).encode() for name, text in _QUERIES.items()}
        self._channel = channel

    async def register(
        self, connections: Connections, schedules: Sequence[CronSchedule], now: float | None
    ) -> dict[str, int | None]:
        if not schedules:
            return {}
        args = {
            "now": now,
            "names": [s.name for s in schedules],
            "queues": [s.queue for s in schedules],
            "job_names": [s.job_name for s in schedules],
            "expressions": [s.expression for s in schedules],
            "tzs": [s.tz for s in schedules],
            "catch_ups": [s.catch_up for s in schedules],
            "overlaps": [s.overlap for s in schedules],
        }
        rows = await connections.rows(self._q["cron_register"], args)
        recorded = {row["name"]: row["last_tick"] for row in rows}
        return {s.name: recorded.get(s.name) for s in schedules}

    async def fire(
        self, connections: Connections, request: CronFire, now: float | None
    ) -> CronFireResult:
        job = request.job
        args: dict[str, Any] = {
            "now": now,
            "name": request.name,
            "tick": request.tick,
            "skip_if_running": request.skip_if_running,
            "id": job.id,
            "queue": job.queue,
            "job_name": job.name,
            "payload": job.payload,
            "priority": job.priority,
            "max_attempts": job.max_attempts,
            "run_at": None if job.run_at is None else float(job.run_at),
            "delay": float(job.delay),
            "keep_completed": None if job.keep_completed is None else float(job.keep_completed),
            "keep_failed": None if job.keep_failed is None else float(job.keep_failed),
            "channel": self._channel,
            "group_key": None if job.group is None else job.group.key,
            "group_concurrency": None if job.group is None else job.group.concurrency,
            "group_rate_count": None if job.group is None else job.group.rate_count,
            "group_rate_per": None if job.group is None else float(job.group.rate_per),
            "headers": job.headers,
        }
        (row,) = await connections.rows(self._q["cron_fire"], args)
        if row["status"] is None:
            previous = row["previous_tick"]
            return CronFireResult(CronFireStatus.ALREADY, max(previous or 0, request.tick))
        return CronFireResult(CronFireStatus(row["status"]), request.tick)

    async def listing(self, connections: Connections) -> list[CronInfo]:
        return [cron_info_of(row) for row in await connections.rows(self._q["cron_list"], {})]


class CronOperations:
    """The cron operations of :class:`~conveyor.backends.postgres.driver.PostgresDriver`."""

    _cron: Cron
    _connections: Callable[[], Connections]

    async def cron_register(
        self, schedules: Sequence[CronSchedule], *, now: float | None = None
    ) -> dict[str, int | None]:
        check_now(now)
        check_cron_schedules(schedules)
        return await self._cron.register(self._connections(), schedules, now)

    async def cron_fire(self, fire: CronFire, *, now: float | None = None) -> CronFireResult:
        check_now(now)
        check_cron_fire(fire)
        return await self._cron.fire(self._connections(), fire, now)

    async def cron_list(self) -> list[CronInfo]:
        return await self._cron.listing(self._connections())
