"""The memory driver's queue, worker, route and leader registry operations."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from conveyor.backends.memory._store import MemoryStore
from conveyor.drivers.common import resolve_now
from conveyor.drivers.records import JobState, QueueInfo, WorkerInfo


class RegistryOperations:
    """The queue, worker, route and leader operations of
    :class:`~conveyor.backends.memory.driver.MemoryDriver`."""

    _store: MemoryStore
    notify: Callable[[str], None]

    async def queue_list(self) -> list[QueueInfo]:
        s = self._store
        with s.lock:
            names = sorted(s.known_queues | s.paused)
            infos: list[QueueInfo] = []
            for name in names:
                counts = dict.fromkeys(JobState, 0)
                for job in s.jobs.values():
                    if job.queue == name:
                        counts[job.state] += 1
                infos.append(QueueInfo(name, name in s.paused, counts))
        return infos

    async def queue_pause(self, queue: str) -> None:
        with self._store.lock:
            self._store.paused.add(queue)
            self._store.known_queues.add(queue)

    async def queue_resume(self, queue: str) -> None:
        with self._store.lock:
            self._store.paused.discard(queue)
        self.notify(queue)

    async def worker_heartbeat(
        self, info: WorkerInfo, *, ttl: float, now: float | None = None
    ) -> None:
        at = resolve_now(now)
        with self._store.lock:
            workers = self._store.workers
            for gone in [w for w, (_, expires) in workers.items() if expires <= at]:
                del workers[gone]
            workers[info.id] = (dataclasses.replace(info, last_seen_at=at), at + ttl)

    async def worker_deregister(self, worker_id: str) -> None:
        with self._store.lock:
            self._store.workers.pop(worker_id, None)

    async def worker_list(self, *, now: float | None = None) -> list[WorkerInfo]:
        at = resolve_now(now)
        with self._store.lock:
            live = [info for info, expires in self._store.workers.values() if expires > at]
        return sorted(live, key=lambda w: w.started_at)

    async def route_register(self, routes: Mapping[str, str]) -> None:
        with self._store.lock:
            self._store.routes.update(routes)

    async def route_list(self) -> dict[str, str]:
        with self._store.lock:
            return dict(self._store.routes)

    async def leader_acquire(
        self, name: str, holder: str, *, ttl: float, now: float | None = None
    ) -> bool:
        at = resolve_now(now)
        with self._store.lock:
            current = self._store.leaders.get(name)
            if current is None or current[0] == holder or current[1] <= at:
                self._store.leaders[name] = (holder, at + ttl)
                return True
            return False

    async def leader_release(self, name: str, holder: str) -> None:
        with self._store.lock:
            current = self._store.leaders.get(name)
            if current is not None and current[0] == holder:
                del self._store.leaders[name]
