"""A handler whose payload parameter is another model."""

from __future__ import annotations

from pydantic import BaseModel

from conveyor import JobContext, Queue, Worker, job


class Charge(BaseModel):
    order_id: int


class Refund(BaseModel):
    order_id: int


charge = job("billing.charge", Charge, result=str)
worker = Worker(Queue.from_url("memory://typing"))


# expect: mypy=arg-type pyright=reportArgumentType
@worker.handles(charge)
async def do_charge(payload: Refund, ctx: JobContext) -> str:
    return str(payload.order_id)


# expect: mypy=arg-type pyright=reportArgumentType
@worker.handles(charge)
def do_charge_sync(payload: Refund, ctx: JobContext) -> str:
    return str(payload.order_id)
