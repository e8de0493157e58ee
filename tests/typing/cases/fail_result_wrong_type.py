"""Using a job's result as the wrong type."""

from __future__ import annotations

from pydantic import BaseModel

from conveyor import Queue, SyncQueue, job


class Resize(BaseModel):
    url: str


resize = job("image.resize", Resize, result=str)


async def produce(queue: Queue) -> None:
    handle = await queue.enqueue(resize, Resize(url="a.png"))
    # expect: mypy=assignment pyright=reportAssignmentType
    _x: int = await handle.result()


def produce_sync(portal: SyncQueue) -> None:
    handle = portal.enqueue(resize, Resize(url="a.png"))
    # expect: mypy=assignment pyright=reportAssignmentType
    _y: int = handle.result()
