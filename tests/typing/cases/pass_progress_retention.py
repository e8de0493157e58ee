"""Progress from handlers, and retention per definition and per enqueue.

Locals prefixed with ``_`` exist only to pin a type (pyright does not report them as unused).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel

from conveyor import JobContext, JobInfo, Queue, SyncQueue, Worker, job


class Export(BaseModel):
    report_id: int


export = job(
    "reports.export",
    Export,
    result=str,
    keep_completed=timedelta(hours=1),
    keep_failed=7 * 24 * 3600,
)
export_quietly = job("reports.quiet", Export, keep_completed=0)


def register(worker: Worker) -> None:
    @worker.handles(export)
    async def handle(payload: Export, ctx: JobContext) -> str:
        ctx.progress(0)
        ctx.progress(0.5, "half way")
        ctx.progress(1, message=None)
        _last: float | None = ctx.last_progress
        return str(payload.report_id)

    @worker.handles(export_quietly)
    def handle_sync(payload: Export, ctx: JobContext) -> None:
        ctx.progress(0.25, f"report {payload.report_id}")


async def produce(queue: Queue) -> None:
    handle = await queue.enqueue(export, Export(report_id=1), keep_completed=0)
    await queue.enqueue(export, Export(report_id=2), keep_failed=timedelta(days=30))
    await queue.enqueue_many(
        [export.request(Export(report_id=3), keep_completed=60.0, keep_failed=None)]
    )
    info: JobInfo = await handle.info()
    _fraction: float | None = info.progress
    _message: str | None = info.progress_message
    _at: datetime | None = info.progress_at
    _expires: datetime | None = info.expires_at


def produce_sync(portal: SyncQueue) -> None:
    portal.enqueue(export, Export(report_id=4), keep_completed=timedelta(minutes=5))
