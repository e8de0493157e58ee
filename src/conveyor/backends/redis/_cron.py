"""Schedules on Redis: ``cron_register``, ``cron_fire`` and ``cron_list``.

A schedule's hash lives in the slot of the queue its jobs go to (``{<prefix>:<queue>}:cron:
<name>``), so ``cron_fire`` (see ``lua/cron_fire.lua``) records the tick and inserts its job in
one script on one Cluster slot. The shared hash ``{<prefix>}:crons`` maps each schedule's name
to that queue, for listing them across slots, as the queue registry does for queues.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from conveyor.backends.redis import _coordination as coord
from conveyor.backends.redis._store import Store
from conveyor.drivers.records import (
    CronFire,
    CronFireResult,
    CronFireStatus,
    CronInfo,
    CronSchedule,
)

_DECLARED = ("queue", "job", "expr", "tz", "catch_up", "overlap", "at")


class Schedules:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def register(
        self, schedules: Sequence[CronSchedule], now: float | None
    ) -> dict[str, int | None]:
        if not schedules:
            return {}
        client, ns = self._store.client, self._store.ns
        at = await self._store.now(now)
        recorded: dict[str, int | None] = {}
        for s in schedules:
            await self._store.register(s.queue)
            key = self._store.keys(s.queue).cron(s.name)
            values = (s.queue, s.job_name, s.expression, s.tz, s.catch_up, s.overlap, repr(at))
            fields = [item for pair in zip(_DECLARED, values, strict=True) for item in pair]
            await client.execute_command("HSET", key, *fields)
            await client.execute_command("HSET", ns.crons, s.name, s.queue)
            tick = await client.execute_command("HGET", key, "t")
            recorded[s.name] = None if tick is None else int(tick)
        return recorded

    async def fire(self, fire: CronFire, now: float | None) -> CronFireResult:
        queue = fire.job.queue
        await self._store.register(queue)  # a queue with jobs is always known
        status, tick = await coord.cron_fire(self._store.client, self._store.keys(queue), fire, now)
        return CronFireResult(status, tick)

    async def listing(self) -> list[CronInfo]:
        client, ns = self._store.client, self._store.ns
        where = _text_map(await client.execute_command("HGETALL", ns.crons))
        names = sorted(where)
        replies = await asyncio.gather(
            *(client.execute_command("HGETALL", self._store.keys(where[n]).cron(n)) for n in names)
        )
        infos: list[CronInfo] = []
        for name, reply in zip(names, replies, strict=True):
            fields = _text_map(reply)
            if "expr" not in fields:
                continue
            schedule = CronSchedule(
                name,
                fields["queue"],
                fields["job"],
                fields["expr"],
                fields["tz"],
                fields["catch_up"],
                fields["overlap"],
            )
            status = fields.get("st")
            infos.append(
                CronInfo(
                    schedule,
                    registered_at=float(fields["at"]),
                    last_tick=int(fields["t"]) if "t" in fields else None,
                    last_status=CronFireStatus(status) if status else None,
                    last_fired_at=float(fields["ft"]) if "ft" in fields else None,
                    last_job_id=fields.get("lj"),
                )
            )
        return infos


def _text_map(reply: Any) -> dict[str, str]:
    """An HGETALL reply (a dict from redis-py, a flat list from our client) as text."""
    if hasattr(reply, "items"):
        parsed: Mapping[Any, Any] = reply
        items = list(parsed.items())
    else:
        items = [(reply[i], reply[i + 1]) for i in range(0, len(reply), 2)]
    return {bytes(k).decode(): bytes(v).decode() for k, v in items}
