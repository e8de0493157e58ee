"""Shared pieces of the transactional enqueue tests: a job, and a worker that drains a queue."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel

from conveyor import JobContext, Queue, Worker, job
from tests.conformance.worker.helpers import WAIT_TIMEOUT, fast_config


class Invite(BaseModel):
    email: str


send_invite = job("txn.send_invite", Invite, result=str, queue="emails")


async def drain(queue: Queue) -> list[str]:
    """Run a burst worker on ``queue`` until nothing is left to run; the emails it sent."""
    sent: list[str] = []
    worker = Worker(queue, jobs=[send_invite], config=fast_config(burst=True))

    @worker.handles(send_invite)
    async def handle(payload: Invite, ctx: JobContext) -> str:
        sent.append(payload.email)
        return f"sent to {payload.email}"

    await asyncio.wait_for(worker.run(), WAIT_TIMEOUT)
    return sent
