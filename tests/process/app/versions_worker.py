"""Two deploys of one job during a rolling upgrade, for the payload-version process test:
``old`` runs the first version of ``proc.greet`` (one ``name`` field), ``new`` the second (the
name split in two, with an upgrade for payloads of the first). Run one with
``conveyor --url sqlite:///... worker tests.process.app.versions_worker:old``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import BaseModel

from conveyor import JobContext, Queue, Worker, job
from tests.process.app import ledger
from tests.process.app.worker import CONFIG


class GreetV1(BaseModel):
    name: str


class GreetV2(BaseModel):
    first_name: str
    last_name: str


def split_name(from_version: int, data: dict[str, Any]) -> dict[str, Any]:
    first, _, last = data.pop("name").partition(" ")
    return {**data, "first_name": first, "last_name": last}


greet_v1 = job("proc.greet", GreetV1, result=str)
greet_v2 = job("proc.greet", GreetV2, result=str, version=2, upgrade=split_name)

queue = Queue.from_url()
# A short poll, so a handed-back job is fetched as soon as its delay is over.
_CONFIG = dataclasses.replace(CONFIG, poll_interval=0.05)
old = Worker(queue, config=_CONFIG, jobs=[greet_v1])
new = Worker(queue, config=_CONFIG, jobs=[greet_v2])


@old.handles(greet_v1)
async def greet_old(payload: GreetV1, ctx: JobContext) -> str:
    ledger.record("start", ctx)
    ledger.record("end", ctx)
    return f"v1:{payload.name}"


@new.handles(greet_v2)
async def greet_new(payload: GreetV2, ctx: JobContext) -> str:
    ledger.record("start", ctx)
    ledger.record("end", ctx)
    return f"v2:{payload.first_name}/{payload.last_name}"
