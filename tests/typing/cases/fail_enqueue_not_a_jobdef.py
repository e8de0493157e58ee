"""Passing something that is not a ``JobDef`` to ``enqueue``."""

from __future__ import annotations

from pydantic import BaseModel

from conveyor import Queue, SyncQueue


class Resize(BaseModel):
    url: str


async def produce(queue: Queue) -> None:
    # expect: mypy=arg-type pyright=reportArgumentType
    await queue.enqueue("image.resize", Resize(url="a.png"))


def produce_sync(portal: SyncQueue) -> None:
    # expect: mypy=arg-type pyright=reportArgumentType
    portal.enqueue(Resize, Resize(url="a.png"))
