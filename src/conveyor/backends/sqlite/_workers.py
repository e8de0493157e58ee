"""The SQLite driver's registry: its queue, worker, route and leader operations, a heartbeat's
statement arguments, and a worker row read back as a :class:`WorkerInfo`."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping
from typing import Any, cast

from conveyor.backends.sqlite._connection import Connection
from conveyor.backends.sqlite._sql import QUERIES as Q
from conveyor.backends.sqlite._statements import rows_of
from conveyor.drivers.common import resolve_now
from conveyor.drivers.records import JobState, QueueInfo, WorkerInfo


def heartbeat_args(info: WorkerInfo, at: float, ttl: float) -> dict[str, Any]:
    return {
        "id": info.id,
        "hostname": info.hostname,
        "pid": info.pid,
        "queues": json.dumps(list(info.queues)),
        "concurrency": info.concurrency,
        "started_at": info.started_at,
        "now": at,
        "running": info.running,
        "processed": info.processed,
        "names": json.dumps(list(info.names)),
        "expires_at": at + ttl,
    }


def worker_of(row: sqlite3.Row) -> WorkerInfo:
    return WorkerInfo(
        id=row["id"],
        hostname=row["hostname"],
        pid=row["pid"],
        queues=_names(row["queues"]),
        concurrency=row["concurrency"],
        started_at=float(row["started_at"]),
        last_seen_at=float(row["last_seen_at"]),
        running=row["running"],
        processed=row["processed"],
        names=_names(row["names"]),
    )


def _names(text: str | None) -> tuple[str, ...]:
    """A stored JSON array of names; anything else (a row edited by hand) reads as none, so one
    bad row cannot keep the others from being listed."""
    try:
        value: object = json.loads(text or "[]")
    except ValueError:
        return ()
    if not isinstance(value, list):
        return ()
    items = cast("list[object]", value)
    return tuple(str(item) for item in items)


class RegistryOperations:
    """The queue, worker, route and leader operations of
    :class:`~conveyor.backends.sqlite.driver.SQLiteDriver`."""

    _db: Connection
    notify: Callable[[str], None]

    async def queue_list(self) -> list[QueueInfo]:
        def step(conn: sqlite3.Connection) -> list[QueueInfo]:
            counts: dict[str, dict[JobState, int]] = {}
            for row in rows_of(conn, "queue_list__counts", {}):
                per_queue = counts.setdefault(row["queue"], dict.fromkeys(JobState, 0))
                per_queue[JobState(row["state"])] = row["n"]
            return [
                QueueInfo(
                    row["name"],
                    bool(row["paused"]),
                    counts.get(row["name"], dict.fromkeys(JobState, 0)),
                )
                for row in rows_of(conn, "queue_list", {})
            ]

        return await self._db.read(step)

    async def queue_pause(self, queue: str) -> None:
        await self._db.write(lambda conn: conn.execute(Q["queue_pause"], {"queue": queue}))

    async def queue_resume(self, queue: str) -> None:
        await self._db.write(lambda conn: conn.execute(Q["queue_resume"], {"queue": queue}))
        self.notify(queue)

    async def worker_heartbeat(
        self, info: WorkerInfo, *, ttl: float, now: float | None = None
    ) -> None:
        at = resolve_now(now)
        args = heartbeat_args(info, at, ttl)

        def step(conn: sqlite3.Connection) -> None:
            conn.execute(Q["worker_heartbeat__prune"], {"now": at})
            conn.execute(Q["worker_heartbeat"], args)

        await self._db.write(step, kind="heartbeat")

    async def worker_deregister(self, worker_id: str) -> None:
        await self._db.write(lambda conn: conn.execute(Q["worker_deregister"], {"id": worker_id}))

    async def worker_list(self, *, now: float | None = None) -> list[WorkerInfo]:
        at = resolve_now(now)
        rows = await self._db.run(lambda conn: rows_of(conn, "worker_list", {"now": at}))
        return [worker_of(row) for row in rows]

    async def route_register(self, routes: Mapping[str, str]) -> None:
        now = resolve_now(None)
        rows = [{"name": name, "queue": queue, "now": now} for name, queue in routes.items()]
        if rows:
            await self._db.write(lambda conn: conn.executemany(Q["route_register"], rows))

    async def route_list(self) -> dict[str, str]:
        rows = await self._db.run(lambda conn: rows_of(conn, "route_list", {}))
        return {row["name"]: row["queue"] for row in rows}

    async def leader_acquire(
        self, name: str, holder: str, *, ttl: float, now: float | None = None
    ) -> bool:
        at = resolve_now(now)
        args = {"name": name, "holder": holder, "expires_at": at + ttl, "now": at}
        rows = await self._db.write(
            lambda conn: rows_of(conn, "leader_acquire", args), kind="leader"
        )
        return bool(rows)

    async def leader_release(self, name: str, holder: str) -> None:
        args = {"name": name, "holder": holder}
        await self._db.write(lambda conn: conn.execute(Q["leader_release"], args))
