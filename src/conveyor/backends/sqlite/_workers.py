"""The SQLite driver's worker registry rows: a heartbeat's statement arguments, and a row read
back as a :class:`WorkerInfo`."""

from __future__ import annotations

import json
import sqlite3
from typing import Any, cast

from conveyor.drivers.records import WorkerInfo


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
