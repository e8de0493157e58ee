"""A schedule whose payload is not the definition's model is rejected by ``Worker.cron`` and
``Worker.every``."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel

from conveyor import Queue, Worker, job


class Cleanup(BaseModel):
    older_than_days: int


class SyncInventory(BaseModel):
    warehouse: str


cleanup = job("sessions.cleanup", Cleanup)
worker = Worker(Queue.from_url("memory://"))

# P is fixed by the definition and contradicted by the payload, as for enqueue.
# expect: mypy=misc pyright=reportArgumentType
worker.cron("30 1 * * *", cleanup, SyncInventory(warehouse="north"), tz="Europe/London")

# expect: mypy=misc pyright=reportArgumentType
worker.every(timedelta(minutes=5), cleanup, SyncInventory(warehouse="north"))

# expect: mypy=arg-type pyright=reportArgumentType
worker.cron("30 1 * * *", cleanup, Cleanup(older_than_days=30), catch_up="all")

# expect: mypy=arg-type pyright=reportArgumentType
worker.every(timedelta(minutes=5), cleanup, Cleanup(older_than_days=1), overlap="never")
