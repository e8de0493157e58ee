"""Dedup modes on Queue.enqueue, SyncQueue.enqueue and JobDef.request; the handle's outcome.

Locals prefixed with ``_`` exist only to pin a type (pyright does not report them as unused).
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel

from conveyor import (
    Debounce,
    DedupPolicy,
    InsertStatus,
    JobRequest,
    Queue,
    SyncQueue,
    Throttle,
    UntilFinished,
    UntilStarted,
    job,
)


class Reindex(BaseModel):
    doc_id: int


reindex = job("search.reindex", Reindex, result=int)


async def produce(queue: Queue) -> bool:
    handle = await queue.enqueue(
        reindex,
        Reindex(doc_id=7),
        job_id="reindex:7",
        dedup=Debounce(timedelta(seconds=10)),
    )
    _outcome: InsertStatus | None = handle.outcome
    _duplicate: bool = handle.duplicate
    await queue.enqueue(reindex, Reindex(doc_id=7), dedup=UntilStarted())
    await queue.enqueue(reindex, Reindex(doc_id=7), dedup=UntilFinished(key="doc:7"))
    await queue.enqueue(reindex, Reindex(doc_id=7), dedup=Throttle(60, key="doc:7"))
    await queue.enqueue(reindex, Reindex(doc_id=7), dedup=None)
    policy: DedupPolicy = Throttle(ttl=timedelta(minutes=1))
    request: JobRequest[Reindex, int] = reindex.request(Reindex(doc_id=8), dedup=policy)
    await queue.enqueue_many([request])
    return handle.outcome is InsertStatus.REPLACED


def produce_sync(portal: SyncQueue) -> InsertStatus | None:
    handle = portal.enqueue(reindex, Reindex(doc_id=7), dedup=Debounce(delay=2.5))
    _ttl: float | timedelta = Throttle(5).ttl
    _key: str | None = UntilStarted().key
    return handle.outcome
