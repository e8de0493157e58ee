"""The PostgreSQL driver's queue, worker, route and leader registry operations."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from conveyor.backends.postgres._records import Row, heartbeat_args, worker_of
from conveyor.backends.postgres._url import PostgresURL
from conveyor.drivers.common import check_now
from conveyor.drivers.records import JobState, QueueInfo, WorkerInfo


class RegistryOperations:
    """The queue, worker, route and leader operations of
    :class:`~conveyor.backends.postgres.driver.PostgresDriver`."""

    _url: PostgresURL
    _rows: Callable[[str, Mapping[str, Any]], Awaitable[list[Row]]]
    notify: Callable[[str], None]

    async def queue_list(self) -> list[QueueInfo]:
        queues: dict[str, QueueInfo] = {}
        for row in await self._rows("queue_list", {}):
            info = queues.get(row["name"])
            if info is None:
                info = QueueInfo(row["name"], row["paused"], dict.fromkeys(JobState, 0))
                queues[row["name"]] = info
            if row["state"] is not None:
                info.counts[JobState(row["state"])] = int(row["n"])
        return list(queues.values())

    async def queue_pause(self, queue: str) -> None:
        await self._rows("queue_pause", {"queue": queue})

    async def queue_resume(self, queue: str) -> None:
        await self._rows("queue_resume", {"queue": queue, "channel": self._url.channel})
        self.notify(queue)

    async def worker_heartbeat(
        self, info: WorkerInfo, *, ttl: float, now: float | None = None
    ) -> None:
        check_now(now)
        await self._rows("worker_heartbeat", {**heartbeat_args(info), "now": now, "ttl": ttl})

    async def worker_deregister(self, worker_id: str) -> None:
        await self._rows("worker_deregister", {"id": worker_id})

    async def worker_list(self, *, now: float | None = None) -> list[WorkerInfo]:
        check_now(now)
        return [worker_of(row) for row in await self._rows("worker_list", {"now": now})]

    async def route_register(self, routes: Mapping[str, str]) -> None:
        if routes:
            args = {"names": list(routes), "queues": list(routes.values())}
            await self._rows("route_register", args)

    async def route_list(self) -> dict[str, str]:
        return {row["name"]: row["queue"] for row in await self._rows("route_list", {})}

    async def leader_acquire(
        self, name: str, holder: str, *, ttl: float, now: float | None = None
    ) -> bool:
        check_now(now)
        args = {"name": name, "holder": holder, "ttl": ttl, "now": now}
        return bool(await self._rows("leader_acquire", args))

    async def leader_release(self, name: str, holder: str) -> None:
        await self._rows("leader_release", {"name": name, "holder": holder})
