"""Handlers and the Worker of the chaos test; run with
``conveyor --url sqlite:///... worker tests.process.app.chaos_worker:worker``.

Fast knobs: a 2.5 s lease renewed every ~0.8 s, maintenance (rescue) every 0.2 s, and
``max_stalls=10`` so a job whose worker is killed a few times is rescued, not failed.
"""

from __future__ import annotations

import asyncio
import time

from conveyor import JobContext, Queue, Retention, Worker, WorkerConfig
from tests.process.app import chaos_ledger
from tests.process.app.chaos_jobs import Burn, Nap, burn, nap

LEASE_SECONDS = 2.5
MAX_STALLS = 10

CONFIG = WorkerConfig(
    concurrency=8,
    lease_seconds=LEASE_SECONDS,
    lease_renew_interval=LEASE_SECONDS / 3,
    maintenance_interval=0.2,
    heartbeat_interval=0.5,
    poll_interval=0.05,
    max_stalls=MAX_STALLS,
    # Long enough that a SIGKILL 0.2 s after SIGTERM lands while jobs are still finishing.
    shutdown_grace=10.0,
    # Keep every completed job so the checker sees each one.
    retention=Retention(completed_max_count=None),
)

queue = Queue.from_url()
worker = Worker(queue, config=CONFIG, jobs=[nap, burn])


@worker.handles(nap)
async def run_nap(payload: Nap, ctx: JobContext) -> str:
    run = chaos_ledger.begin(ctx)
    await asyncio.sleep(payload.ms / 1000)
    chaos_ledger.effect(run)
    return run.run_id


@worker.handles(burn)
def run_burn(payload: Burn, ctx: JobContext) -> str:
    run = chaos_ledger.begin(ctx)
    deadline = time.perf_counter() + payload.ms / 1000
    spins = 0
    while time.perf_counter() < deadline:
        spins += sum(range(200))  # pure-Python work: holds the GIL like real CPU-bound code
    chaos_ledger.effect(run)
    return run.run_id
