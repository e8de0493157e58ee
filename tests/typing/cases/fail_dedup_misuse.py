"""Misused dedup modes are rejected: a mode given by name, a mode without its time, a time or
key of the wrong type, a mode class instead of a value, and changing a mode after it is made."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel

from conveyor import Debounce, Queue, SyncQueue, Throttle, UntilStarted, job


class Reindex(BaseModel):
    doc_id: int


reindex = job("search.reindex", Reindex)


async def produce(queue: Queue) -> None:
    # expect: mypy=arg-type pyright=reportArgumentType
    await queue.enqueue(reindex, Reindex(doc_id=7), dedup="until_started")
    # expect: mypy=call-arg pyright=reportCallIssue
    await queue.enqueue(reindex, Reindex(doc_id=7), dedup=Throttle())
    # expect: mypy=arg-type pyright=reportArgumentType
    await queue.enqueue(reindex, Reindex(doc_id=7), dedup=Debounce("10s"))
    # expect: mypy=arg-type pyright=reportArgumentType
    await queue.enqueue(reindex, Reindex(doc_id=7), dedup=UntilStarted(key=7))


def produce_sync(portal: SyncQueue) -> None:
    # expect: mypy=arg-type pyright=reportArgumentType
    portal.enqueue(reindex, Reindex(doc_id=7), dedup=timedelta(seconds=10))


def request() -> None:
    # expect: mypy=arg-type pyright=reportArgumentType
    reindex.request(Reindex(doc_id=7), dedup=UntilStarted)


def mutate() -> None:
    policy = Throttle(60)
    # expect: mypy=misc pyright=reportAttributeAccessIssue
    policy.ttl = 120
