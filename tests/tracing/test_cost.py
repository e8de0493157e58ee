"""What tracing costs where OpenTelemetry is missing or has no SDK: nothing of it is imported
without the API, and without an SDK no span is made and nothing is stored unless a context is
already current. Each case runs in a fresh interpreter (a process's tracer provider is global)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# Makes ``opentelemetry`` unimportable, as if it were not installed.
BLOCKER = """
import sys
class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _Blocker())
"""

# A queue and a worker on the memory backend that enqueue, run a job (sync and async handlers,
# through a middleware of the application's own) and print what they saw.
ROUND_TRIP = """
import asyncio, sys
from pydantic import BaseModel
from conveyor import JobCall, JobContext, Queue, Worker, WorkerConfig, job

class Num(BaseModel):
    n: int

echo = job("cost.echo", Num, result=int)
sync_echo = job("cost.sync", Num, result=int)

async def main():
    queue = Queue.from_url("memory://cost")
    worker = Worker(queue, config=WorkerConfig(poll_interval=0.02, burst=True))
    seen = []

    @worker.use
    async def mine(call: JobCall, call_next):
        seen.append(dict(call.headers))
        return await call_next()

    @worker.handles(echo)
    async def run(payload: Num, ctx: JobContext) -> int:
        return payload.n

    @worker.handles(sync_echo)
    def run_sync(payload: Num, ctx: JobContext) -> int:
        return payload.n

    a = await queue.enqueue(echo, Num(n=1))
    b = await queue.enqueue_many([sync_echo.request(Num(n=2))])
    await worker.run()
    assert await a.result() == 1 and await b[0].result() == 2
    print("traced", queue.traced)
    print("middleware", [repr(m) for m in worker._middleware() if m is not mine])
    print("headers", seen)
    print("loaded", sorted(m for m in sys.modules if m.startswith("opentelemetry")))
    print("tracing-module", "conveyor.tracing._otel" in sys.modules)

asyncio.run(main())
"""


def run(code: str) -> dict[str, str]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return dict(line.split(" ", 1) for line in done.stdout.splitlines())


def test_without_opentelemetry_nothing_of_it_is_imported() -> None:
    seen = run(BLOCKER + ROUND_TRIP)
    assert seen == {
        "traced": "False",
        "middleware": "[]",
        "headers": "[{}, {}]",
        "loaded": "[]",
        "tracing-module": "False",
    }


def test_tracing_true_without_opentelemetry_says_what_to_install() -> None:
    seen = run(
        BLOCKER
        + """
from conveyor import InvalidArgument, Queue, WorkerConfig, Worker
try:
    Queue.from_url("memory://x", tracing=True)
except InvalidArgument as exc:
    print("error", exc)
worker = Worker(Queue.from_url("memory://x"), config=WorkerConfig(tracing=True))
try:
    worker._middleware()
except InvalidArgument as exc:
    print("worker", exc)
"""
    )
    assert seen["error"] == "tracing=True needs the OpenTelemetry API: pip install 'conveyor[otel]'"
    assert seen["worker"] == seen["error"]


def test_without_an_sdk_nothing_is_stored_and_no_span_is_made() -> None:
    seen = run(ROUND_TRIP)
    assert seen["traced"] == "True"
    assert seen["headers"] == "[{}, {}]"  # no current context: nothing to carry
    assert seen["middleware"] == "[]"  # nothing to record: the worker runs without it


def test_without_an_sdk_a_current_context_is_passed_on() -> None:
    """The API alone, with a context someone else made current (a framework's incoming
    request): the job carries it; with the tracing middleware registered by hand the handler
    runs in it too, so its own enqueues carry it on."""
    seen = run(
        """
import asyncio
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from pydantic import BaseModel
from conveyor import JobContext, Queue, Worker, WorkerConfig, job, tracing

class Num(BaseModel):
    n: int

first = job("cost.first", Num)
second = job("cost.second", Num)
incoming = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(1))

async def main():
    queue = Queue.from_url("memory://pass")
    worker = Worker(queue, config=WorkerConfig(poll_interval=0.02, burst=True))
    worker.use(tracing.middleware())

    @worker.handles(first)
    async def run_first(payload: Num, ctx: JobContext) -> None:
        await queue.enqueue(second, Num(n=2), job_id="second")

    @worker.handles(second)
    async def run_second(payload: Num, ctx: JobContext) -> None:
        pass

    with trace.use_span(NonRecordingSpan(incoming)):
        await queue.enqueue(first, Num(n=1), job_id="first")
    await worker.run()
    for job_id in ("first", "second"):
        info = await queue.get(job_id)
        print(job_id, info.headers.get("traceparent"))

asyncio.run(main())
"""
    )
    carried = f"00-{0x1234:032x}-{0x5678:016x}-01"
    assert seen == {"first": carried, "second": carried}
