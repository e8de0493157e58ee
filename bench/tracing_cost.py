"""What tracing costs: the same Redis backlog drained by one burst worker with tracing off
("off"), with the OpenTelemetry API but no SDK ("api"), with an SDK that samples and records
every span ("sdk": a batch processor into an exporter that drops them) and with the same SDK
sampling one trace in ten ("sdk10": ``ParentBased(TraceIdRatioBased(0.1))``, a common
production setting), alternated round by round on a private redis-server.

    .venv/bin/python bench/tracing_cost.py [--n 20000] [--rounds 5] [--single 2000]
        [--variants off,api,sdk,sdk10]

Each variant runs in a process of its own (a process's tracer provider is set once). Figures,
medians of the rounds:

* **drain**: one burst worker (concurrency 100, a no-op async handler) drains ``n`` jobs that
  were enqueued with the variant's tracing (so with the SDK every job carries a
  ``traceparent`` and every attempt makes a span linked to it): jobs/s;
* **enqueue**: ``single`` jobs enqueued one call at a time (a span per call with the SDK):
  jobs/s;
* **CPU per job** of both, in the process that drains or enqueues (``time.process_time``, all
  its threads: the span processor's too): on a shared, loaded machine a steadier measure of
  what tracing adds than the wall clock.

"off" is ``Queue(tracing=False)`` / ``WorkerConfig(tracing=False)``, which takes the same paths
as an install without OpenTelemetry. The figures only mean something as ratios within one run
(see README.md, "Noise on this machine").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parent))

CONCURRENCY = 100  # as the async peers of the shared benchmark
CHUNK = 1000
VARIANTS = ("off", "api", "sdk", "sdk10")


class Noop(BaseModel):
    n: int = 0


def configure(variant: str) -> bool | None:
    """Set the variant's tracer provider; the ``tracing=`` to pass to the queue and worker."""
    if variant == "off":
        return False
    if variant in ("sdk", "sdk10"):
        from opentelemetry import trace
        from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased

        class Dropped(SpanExporter):
            def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        sampler = ALWAYS_ON if variant == "sdk" else ParentBased(TraceIdRatioBased(0.1))
        provider = TracerProvider(sampler=sampler)
        provider.add_span_processor(BatchSpanProcessor(Dropped()))
        trace.set_tracer_provider(provider)
    return True


async def child(url: str, variant: str, n: int, single: int, tag: str) -> dict[str, float]:
    from conveyor import JobContext, Queue, Worker, WorkerConfig, job

    tracing = configure(variant)
    noop = job("bench.noop", Noop, queue=f"trace-{tag}")
    queue = Queue.from_url(url, tracing=tracing)
    await queue.connect()
    started, cpu = time.perf_counter(), time.process_time()
    for i in range(single):
        await queue.enqueue(noop, Noop(n=i))
    enqueue_rate = single / (time.perf_counter() - started)
    enqueue_cpu = (time.process_time() - cpu) / single * 1e6
    for start in range(single, n, CHUNK):
        count = min(CHUNK, n - start)
        await queue.enqueue_many([noop.request(Noop(n=start + i)) for i in range(count)])
    worker = Worker(
        queue,
        config=WorkerConfig(concurrency=CONCURRENCY, burst=True, tracing=tracing),
        jobs=[noop],
    )

    @worker.handles(noop)
    async def handle(payload: Noop, ctx: JobContext) -> None:
        return None

    started, cpu = time.perf_counter(), time.process_time()
    await worker.run()
    drain_rate = n / (time.perf_counter() - started)
    drain_cpu = (time.process_time() - cpu) / n * 1e6
    counts = await queue.counts(noop.queue)
    await queue.close()
    assert not any(c for state, c in counts.items() if state.value != "completed"), counts
    return {
        "drain": drain_rate,
        "enqueue": enqueue_rate,
        "drain_cpu": drain_cpu,
        "enqueue_cpu": enqueue_cpu,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--single", type=int, default=2_000)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--child", nargs=3, metavar=("URL", "VARIANT", "TAG"))
    args = parser.parse_args()
    if args.child:
        url, variant, tag = args.child
        print(json.dumps(asyncio.run(child(url, variant, args.n, args.single, tag))))
        return 0

    from run import private_redis

    variants = tuple(args.variants.split(","))
    assert variants[0] == "off" and set(variants) <= set(VARIANTS), variants
    figures: dict[tuple[str, str], list[float]] = {}
    with private_redis(Path(".bench/tracing").resolve(), None) as port:
        url = f"redis://127.0.0.1:{port}/0"
        for round_ in range(args.rounds):
            order = variants if round_ % 2 == 0 else variants[::-1]
            for variant in order:
                done = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--n",
                        str(args.n),
                        "--single",
                        str(args.single),
                        "--child",
                        url,
                        variant,
                        f"{variant}-{round_}",
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                seen = json.loads(done.stdout.splitlines()[-1])
                for what, rate in seen.items():
                    figures.setdefault((variant, what), []).append(rate)
                print(
                    f"round {round_ + 1} {variant:>5}: drain {seen['drain']:6.0f} jobs/s "
                    f"({seen['drain_cpu']:5.0f} µs CPU/job), enqueue one at a time "
                    f"{seen['enqueue']:6.0f} jobs/s ({seen['enqueue_cpu']:5.0f} µs CPU/job)",
                    file=sys.stderr,
                )
    median = {key: statistics.median(values) for key, values in figures.items()}
    print(f"{args.n} jobs drained, {args.single} enqueued one by one; medians of {args.rounds}:")
    for what, unit in (
        ("drain", "jobs/s"),
        ("drain_cpu", "µs CPU/job"),
        ("enqueue", "jobs/s"),
        ("enqueue_cpu", "µs CPU/job"),
    ):
        off = median[("off", what)]
        costs = []
        for v in variants[1:]:
            value = median[(v, what)]
            cost = value / off - 1 if what.endswith("cpu") else 1 - value / off
            costs.append(f"{v} {value:7.0f} ({100 * cost:+.1f} %)")
        print(f"  {what:11} {unit:10}: off {off:7.0f}  " + "  ".join(costs))
    print("  (cost against off in parentheses: throughput lost, or CPU added)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
