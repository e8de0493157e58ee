"""An async handler returning something other than the definition's result type."""

from __future__ import annotations

from pydantic import BaseModel

from conveyor import JobContext, Queue, Worker, job


class Charge(BaseModel):
    order_id: int


charge = job("billing.charge", Charge, result=str)
worker = Worker(Queue.from_url("memory://typing"))


# expect: mypy=arg-type pyright=reportArgumentType
@worker.handles(charge)
async def do_charge(payload: Charge, ctx: JobContext) -> int:
    return payload.order_id
