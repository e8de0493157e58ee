"""Result types that are not classes (unions, literals) type-check through an annotation."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from conveyor import JobDef, Queue, job


class Lookup(BaseModel):
    key: str


maybe_count: JobDef[Lookup, int | None] = job("lookup.count", Lookup, result=int | None)
verdict: JobDef[Lookup, Literal["ok", "bad"]] = job(
    "lookup.verdict", Lookup, result=Literal["ok", "bad"]
)


async def use(queue: Queue) -> None:
    handle = await queue.enqueue(maybe_count, Lookup(key="a"))
    _count: int | None = await handle.result()
    other = await queue.enqueue(verdict, Lookup(key="b"))
    _word: Literal["ok", "bad"] = await other.result()
