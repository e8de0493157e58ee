"""A worker of one rate-limited definition, for the rate-limit process test: run several with
``conveyor --url ... worker tests.process.app.rate_worker:worker``."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

from conveyor import JobContext, Queue, Rate, Worker, job
from tests.process.app import ledger
from tests.process.app.jobs import Quick
from tests.process.app.worker import CONFIG

RATE = Rate(50, per=timedelta(seconds=1))

rated = job("proc.rated", Quick, result=int, queue="rated", rate_limit=RATE)

queue = Queue.from_url()
worker = Worker(queue, config=dataclasses.replace(CONFIG, concurrency=5), jobs=[rated])


@worker.handles(rated)
async def run_rated(payload: Quick, ctx: JobContext) -> int:
    ledger.record("start", ctx)
    await asyncio.sleep(0.2)  # long enough that the workers' concurrency is in play
    ledger.record("end", ctx)
    return payload.n
