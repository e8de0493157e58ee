"""Async and sync handlers with the exact ``(payload, ctx) -> R`` signature."""

from __future__ import annotations

from pydantic import BaseModel

from conveyor import JobContext, Queue, Worker, job


class Charge(BaseModel):
    order_id: int
    amount_cents: int


class Audit(BaseModel):
    message: str


charge = job("billing.charge", Charge, result=str)
audit = job("audit.log", Audit)
count_words = job("text.count", Audit, result=int)
tags = job("text.tags", Audit, result=list[str])

worker = Worker(Queue.from_url("memory://typing"), jobs=[charge, audit, count_words, tags])


@worker.handles(charge)
async def do_charge(payload: Charge, ctx: JobContext) -> str:
    ctx.logger.info("charging %s", payload.order_id)
    return f"receipt-{payload.order_id}-{payload.amount_cents}"


@worker.handles(audit)
def do_audit(payload: Audit, ctx: JobContext) -> None:
    if ctx.cancelled.is_set():
        return
    print(payload.message, ctx.attempt)


@worker.handles(count_words)
def do_count(payload: Audit, ctx: JobContext) -> int:
    return len(payload.message.split())


@worker.handles(tags)
async def do_tags(payload: Audit, ctx: JobContext) -> list[str]:
    return payload.message.split()


async def noop(payload: Audit, ctx: JobContext) -> None:
    return None


Worker(Queue.from_url("memory://typing")).register(audit, noop)


@worker.handles(job("audit.flush", Audit))
async def do_flush(payload: Audit, ctx: JobContext) -> None:
    ctx.logger.info("flushing %s", payload.message)
