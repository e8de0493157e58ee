"""Handlers and Workers of the process-test app; run with
``conveyor --url sqlite:///... worker tests.process.app.worker:worker``.

The queue comes from ``$CONVEYOR_URL`` (the CLI sets it from ``--url`` before importing this
module). The knobs are fast so the tests never wait long for a lease or a maintenance tick.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time

from conveyor import JobContext, Queue, Retention, Worker, WorkerConfig
from tests.process.app import ledger
from tests.process.app.jobs import (
    Quick,
    Slow,
    Spin,
    Strict,
    crash,
    orphan,
    quick,
    slow,
    spin,
    strict,
)

CONFIG = WorkerConfig(
    lease_seconds=2.0,
    maintenance_interval=0.2,
    heartbeat_interval=0.5,
    poll_interval=0.05,
    # Keep every completed job so the tests can check each one.
    max_stalls=2,  # the third lost lease fails the job (poison-pill test)
    retention=Retention(completed_max_count=None),
)

queue = Queue.from_url()

# Serves every definition it declares: ``conveyor check`` passes.
worker = Worker(queue, config=CONFIG, jobs=[quick, slow, strict, crash, spin])
# Renews its 30 s lease every 10 s; run with ``--lease 1`` the renewal must follow the new lease.
slow_renewal = Worker(
    queue,
    config=dataclasses.replace(CONFIG, lease_seconds=30.0, lease_renew_interval=10.0),
    jobs=[slow],
)
# Declares ``orphan`` without a handler: ``conveyor check`` fails, ``conveyor worker`` refuses.
incomplete = Worker(queue, config=CONFIG, jobs=[quick, orphan])


async def run_quick(payload: Quick, ctx: JobContext) -> int:
    ledger.record("start", ctx)
    ledger.record("end", ctx)
    return payload.n


async def run_slow(payload: Slow, ctx: JobContext) -> str:
    ledger.record("start", ctx)
    deadline = time.monotonic() + payload.max_seconds
    try:
        # A stat of a local file, like the ledger's local writes: blocking, but negligible.
        while not os.path.exists(payload.marker):  # noqa: ASYNC240
            if time.monotonic() > deadline:
                ledger.record("gave_up", ctx)
                raise RuntimeError(f"marker {payload.marker} did not appear")
            await asyncio.sleep(0.02)
    except asyncio.CancelledError:
        ledger.record("interrupted", ctx)
        raise
    ledger.record("end", ctx)
    return "done"


async def run_strict(payload: Strict, ctx: JobContext) -> str:
    ledger.record("start", ctx)
    ledger.record("end", ctx)
    return f"{payload.label}:{payload.count}"


def run_crash(payload: Quick, ctx: JobContext) -> None:
    ledger.record("start", ctx)
    os._exit(70)  # no cleanup, no outcome: the worker is simply gone


def run_spin(payload: Spin, ctx: JobContext) -> int:
    ledger.record("start", ctx)
    total = sum(range(payload.n))  # one C call: the GIL is never released until it returns
    ledger.record("end", ctx)
    return total % 1000


worker.register(quick, run_quick)
worker.register(crash, run_crash)
worker.register(spin, run_spin)
worker.register(slow, run_slow)
worker.register(strict, run_strict)
incomplete.register(quick, run_quick)
slow_renewal.register(slow, run_slow)
