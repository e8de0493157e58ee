"""A worker of the process-test app with a fast interval schedule: ``proc.tick`` every second.
Every process of the test declares the same schedule; each tick must make one job."""

from __future__ import annotations

from datetime import timedelta

from conveyor import JobContext, Queue, Retention, Worker, WorkerConfig
from tests.process.app import ledger
from tests.process.app.jobs import Quick, tick

CONFIG = WorkerConfig(
    lease_seconds=2.0,
    maintenance_interval=0.2,
    heartbeat_interval=0.5,
    poll_interval=0.05,
    retention=Retention(completed_max_count=None),  # every tick's job stays to be counted
)

worker = Worker(Queue.from_url(), config=CONFIG, jobs=[tick])


@worker.handles(tick)
async def run_tick(payload: Quick, ctx: JobContext) -> None:
    ledger.record("start", ctx)
    ledger.record("end", ctx)


worker.every(timedelta(seconds=1), tick, Quick(n=1), name="proc.tick")
