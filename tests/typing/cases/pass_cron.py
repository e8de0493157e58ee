"""Schedules declared on a worker, typed by the definition's payload model."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel

from conveyor import CronInfo, Queue, SyncQueue, Worker, job


class Cleanup(BaseModel):
    older_than_days: int


class SyncInventory(BaseModel):
    warehouse: str


cleanup = job("sessions.cleanup", Cleanup)
sync_inventory = job("inventory.sync", SyncInventory, result=int)
worker = Worker(Queue.from_url("memory://"))

worker.cron("30 1 * * *", cleanup, Cleanup(older_than_days=30), tz="Europe/London")
worker.every(timedelta(minutes=5), sync_inventory, SyncInventory(warehouse="north"))
worker.every(
    60,
    sync_inventory,
    SyncInventory(warehouse="south"),
    name="inventory.sync.south",
    catch_up="latest",
    overlap="skip",
)


async def listing(queue: Queue) -> list[str]:
    infos: list[CronInfo] = await queue.schedules()
    return [info.schedule.name for info in infos]


def listing_sync(portal: SyncQueue) -> list[int | None]:
    return [info.last_tick for info in portal.schedules()]
