"""The no-op handler's accounting: the Python twin of the Node peer's ``BENCH_VARIANT=noop``.

A handler calls :func:`record` (no await, no I/O): it only bumps an in-process counter and keeps
the earliest and latest start time and the latency sample. A timer flushes the totals to the
shared accounting keys on db 15 at most every :data:`FLUSH_S` (``INCRBY count k``, ``ZADD first
LT min``, ``ZADD last GT max``, ``RPUSH`` of the buffered latency samples), so the runner's
counting, drain rate and latency work unchanged while the per-job cost is the queue's alone.

:func:`flush_at_exit` runs beside the worker (``worker.run_beside``) and flushes what is left
when the worker stops, so a ``--burst`` worker's last jobs are counted too.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time

import benchlib as B
import redis.asyncio as aredis

FLUSH_S = 0.005  # as peer.mjs: FLUSH_MS = 5
log = logging.getLogger("bench.noop")


class _Pending:
    def __init__(self) -> None:
        self.count = 0
        self.first = math.inf
        self.last = -math.inf
        self.lat: list[float] = []
        self.timer: asyncio.TimerHandle | None = None
        self.client: aredis.Redis | None = None
        self.tasks: set[asyncio.Task[None]] = set()


_state = _Pending()


def record(ts: float = 0.0) -> None:
    """What the no-op handler does per job: count it, in memory."""
    now = time.time()
    s = _state
    s.count += 1
    s.first = min(s.first, now)
    s.last = max(s.last, now)
    if ts:
        s.lat.append(now - ts)
    if s.timer is None:
        s.timer = asyncio.get_running_loop().call_later(FLUSH_S, _start_flush)


def _start_flush() -> None:
    _state.timer = None
    task = asyncio.get_running_loop().create_task(flush())
    _state.tasks.add(task)
    task.add_done_callback(_state.tasks.discard)


async def flush() -> None:
    """Write the totals gathered since the last flush to db 15 in one round trip."""
    s = _state
    if not s.count:
        return
    count, first, last, lat = s.count, s.first, s.last, s.lat
    s.count, s.first, s.last, s.lat = 0, math.inf, -math.inf, []
    if s.client is None:
        s.client = aredis.Redis.from_url(B.STATS_URL)
    try:
        async with s.client.pipeline(transaction=False) as p:
            p.incrby(B.K_COUNT, count)
            p.zadd(B.K_FIRST, {"t": first}, lt=True)
            p.zadd(B.K_LAST, {"t": last}, gt=True)
            if lat:
                p.rpush(B.K_LAT, *lat)
            await p.execute()
    except Exception:  # the runner then sees a stall; say why in the worker log
        log.exception("pid %d: flushing %d job(s) to the accounting failed", os.getpid(), count)


async def flush_at_exit(stopping: asyncio.Event) -> None:
    """Beside the worker: once it stops, flush what the timer has not written yet."""
    await stopping.wait()
    if _state.timer is not None:
        _state.timer.cancel()
        _state.timer = None
    if _state.tasks:
        await asyncio.gather(*_state.tasks, return_exceptions=True)
    await flush()
    if _state.client is not None:
        await _state.client.aclose()
        _state.client = None
