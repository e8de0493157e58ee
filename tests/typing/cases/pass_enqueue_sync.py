"""Enqueue from sync code through the blocking portal.

Locals prefixed with ``_`` exist only to pin a type (pyright does not report them as unused).
"""

from __future__ import annotations

from pydantic import BaseModel

from conveyor import SyncJobHandle, SyncQueue, job


class Resize(BaseModel):
    url: str
    width: int
    height: int = 0


resize = job("image.resize", Resize, result=str, queue="images")
warm = job("cache.warm", Resize)


def view(portal: SyncQueue) -> str:
    handle = portal.enqueue(resize, Resize(url="https://example.com/a.png", width=640))
    _typed_handle: SyncJobHandle[str] = handle
    handles = portal.enqueue_many(
        [
            resize.request(Resize(url="https://example.com/b.png", width=320)),
            warm.request(Resize(url="https://example.com/c.png", width=1, height=1)),
        ]
    )
    _ids: list[str] = [h.id for h in handles]
    warmed = portal.enqueue(warm, Resize(url="https://example.com/d.png", width=1), delay=1.5)
    _warmed: SyncJobHandle[None] = warmed
    warmed.result()
    return handle.result(timeout=10)


def script() -> None:
    with SyncQueue.from_url("memory://typing") as portal:
        print(view(portal))
