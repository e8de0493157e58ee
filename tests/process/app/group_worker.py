"""A worker of one grouped definition, serial per account, for the groups process test: run
several with ``conveyor --url ... worker tests.process.app.group_worker:worker``."""

from __future__ import annotations

import asyncio
import dataclasses

from pydantic import BaseModel

from conveyor import JobContext, Queue, Worker, job
from tests.process.app import ledger
from tests.process.app.worker import CONFIG


class Posting(BaseModel):
    account: str
    n: int


post = job(
    "proc.post",
    Posting,
    result=int,
    queue="postings",
    group_key=lambda p: p.account,
    group_concurrency=1,
)

queue = Queue.from_url()
worker = Worker(queue, config=dataclasses.replace(CONFIG, concurrency=4), jobs=[post])


@worker.handles(post)
async def run_post(payload: Posting, ctx: JobContext) -> int:
    ledger.record("start", ctx)
    await asyncio.sleep(0.05)  # long enough that two jobs of one account would overlap
    ledger.record("end", ctx)
    return payload.n
