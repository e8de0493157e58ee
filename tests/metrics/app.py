"""A worker for the metrics tests: jobs that complete, fail once, or fail for good."""

from __future__ import annotations

from pydantic import BaseModel

from conveyor import Fixed, JobContext, Permanent, Queue, Worker, WorkerConfig, job

QUEUE = "metered"


class Work(BaseModel):
    n: int


ok = job("metered.ok", Work, queue=QUEUE)
flaky = job("metered.flaky", Work, queue=QUEUE, attempts=3, backoff=Fixed(0))
doomed = job("metered.doomed", Work, queue=QUEUE)


def make_worker(queue: Queue, **config: object) -> Worker:
    defaults: dict[str, object] = {"concurrency": 4, "maintenance_interval": 0.1}
    defaults.update(config)
    worker = Worker(queue, jobs=[ok, flaky, doomed], config=WorkerConfig(**defaults))  # type: ignore[arg-type]

    @worker.handles(ok)
    async def run_ok(payload: Work, ctx: JobContext) -> None:
        return None

    @worker.handles(flaky)
    async def run_flaky(payload: Work, ctx: JobContext) -> None:
        if ctx.attempt == 1:
            raise RuntimeError("the first attempt fails")

    @worker.handles(doomed)
    def run_doomed(payload: Work, ctx: JobContext) -> None:
        raise Permanent("never works")

    return worker


def build() -> Worker:
    """The CLI's target: ``tests.metrics.app:build`` (the URL comes from --url)."""
    return make_worker(Queue.from_url())
