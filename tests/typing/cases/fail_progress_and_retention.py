"""Misusing progress and the retention arguments."""

from __future__ import annotations

from pydantic import BaseModel

from conveyor import JobContext, Queue, SyncQueue, Worker, job


class Export(BaseModel):
    report_id: int


export = job("reports.export", Export, result=str)


def register(worker: Worker) -> None:
    @worker.handles(export)
    async def handle(payload: Export, ctx: JobContext) -> str:
        # expect: mypy=arg-type pyright=reportArgumentType
        ctx.progress("half")
        # expect: mypy=arg-type pyright=reportArgumentType
        ctx.progress(0.5, 3)
        # expect: mypy=call-arg pyright=reportCallIssue
        ctx.progress(0.5, "a", "b")
        return ""


async def produce(queue: Queue) -> None:
    # expect: mypy=arg-type pyright=reportArgumentType
    await queue.enqueue(export, Export(report_id=1), keep_completed="1h")
    # expect: mypy=arg-type pyright=reportArgumentType
    export.request(Export(report_id=2), keep_failed="7d")
    info = await queue.get("x")
    assert info is not None
    # expect: mypy=assignment pyright=reportAssignmentType
    _text: str = info.progress


def produce_sync(portal: SyncQueue) -> None:
    # expect: mypy=arg-type pyright=reportArgumentType
    portal.enqueue(export, Export(report_id=3), keep_failed=[1])


# expect: mypy=call-overload pyright=reportArgumentType
broken = job("reports.broken", Export, keep_completed="forever")
