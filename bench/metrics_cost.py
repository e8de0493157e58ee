"""What metrics cost a worker: the same drain on Redis with ``conveyor.metrics.instrument`` and
without, alternated round by round on a private redis-server.

    .venv/bin/python bench/metrics_cost.py [--n 20000] [--rounds 7] [--scrape 1.0]

One burst worker (concurrency 100, a no-op handler) drains ``n`` jobs; per variant, medians of
the rounds of: jobs/s (wall clock), and the worker process' CPU time per job (user + system,
``time.process_time``), which a loaded machine disturbs far less than the wall clock: on a
shared 2-vCPU machine the rounds' jobs/s vary by ±30 %. With metrics, a thread scrapes
``/metrics`` every ``--scrape`` seconds meanwhile (a pessimistic rate: Prometheus scrapes
every 15 s or so) and the worker leads the depth poll.
The figures only mean something as a ratio within one run (see README.md, "Noise on this
machine"). Last comes what the observer and the backend-call subscriber cost per job, timed
alone (no I/O): the part of the cost that grows with throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from prometheus_client import generate_latest
from pydantic import BaseModel

from conveyor import JobContext, Queue, Worker, WorkerConfig, job
from conveyor.metrics import instrument

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import private_redis

CONCURRENCY = 100  # as the async peers of the shared benchmark
CHUNK = 1000
SCRAPE_MS: list[float] = []


class Noop(BaseModel):
    n: int = 0


noop = job("bench.metered", Noop, queue="metered")


def scrape_until(url: str, every: float, done: threading.Event, counts: list[int]) -> None:
    while not done.wait(every):
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
            response.read()
        counts[0] += 1


async def drain(url: str, n: int, *, metered: bool, scrape: float) -> tuple[float, float]:
    """Enqueue ``n`` jobs, then time one burst worker draining them: (jobs per second, CPU
    microseconds per job)."""
    queue = Queue.from_url(url)
    await queue.connect()
    for start in range(0, n, CHUNK):
        count = min(CHUNK, n - start)
        await queue.enqueue_many([noop.request(Noop(n=start + i)) for i in range(count)])
    worker = Worker(queue, config=WorkerConfig(concurrency=CONCURRENCY, burst=True), jobs=[noop])

    async def handle(payload: Noop, ctx: JobContext) -> None:
        return None

    worker.register(noop, handle)
    metrics = instrument(worker, port=0, host="127.0.0.1") if metered else None
    done, scrapes = threading.Event(), [0]
    scraper = None
    if metrics is not None:
        scraper = threading.Thread(target=scrape_until, args=(metrics.url, scrape, done, scrapes))
        scraper.start()
    started, cpu = time.perf_counter(), time.process_time()
    await worker.run()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    done.set()
    if scraper is not None:
        scraper.join()
    if metrics is not None:
        # What one scrape costs the worker's process (prometheus_client's text exposition of
        # this worker's registry, process collectors included), on its own.
        began = time.perf_counter()
        for _ in range(20):
            generate_latest(metrics.registry)
        SCRAPE_MS.append((time.perf_counter() - began) / 20 * 1000)
        metrics.close()
    counts = await queue.counts(noop.queue)
    await queue.close()
    assert not any(v for state, v in counts.items() if state.value != "completed"), counts
    return n / elapsed, cpu / n * 1e6


def per_job_cost(n: int = 100_000) -> float:
    """Microseconds the observer and the subscriber add to one job: its start, its end, and
    the two backend calls (fetch, finish) it takes, amortised over batches of 10, as a drain
    at concurrency 100 batches them."""
    from prometheus_client import CollectorRegistry

    from conveyor.drivers.records import JobRecord, JobState, TransitionKind
    from conveyor.engine import OperationEvent
    from conveyor.metrics.families import Families
    from conveyor.metrics.health import HealthMonitor
    from conveyor.metrics.observer import JobMetrics
    from conveyor.runtime.observers import Observer

    observer = JobMetrics(
        Families(CollectorRegistry(), process=False),
        HealthMonitor(),
        lambda: (["metered"], ["bench.metered"]),
    )
    records = [
        JobRecord(
            id=f"j{i}",
            queue="metered",
            name="bench.metered",
            payload=b"{}",
            state=JobState.ACTIVE,
            priority=0,
            attempt=1,
            max_attempts=3,
            run_at=0.0,
            enqueued_at=0.0,
            seq=i,
            lease_token=f"t{i}",
        )
        for i in range(1000)
    ]
    event = OperationEvent("job_fetch", 0.001)

    def timed(watcher: Observer, subscriber: Callable[[OperationEvent], None]) -> float:
        started = time.perf_counter()
        for i in range(n):
            record = records[i % 1000]
            watcher.job_started(record, 0.01)
            watcher.job_finished(record, TransitionKind.COMPLETE, 0.001)
            if i % 5 == 0:
                subscriber(event)
        return (time.perf_counter() - started) / n * 1e6

    # The loop and the calls themselves, into methods that do nothing: subtracted.
    timings = [
        timed(observer, observer.on_operation) - timed(Observer(), lambda e: None) for _ in range(5)
    ]
    return statistics.median(timings)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--scrape", type=float, default=1.0)
    args = parser.parse_args()
    figures: dict[str, list[float]] = {"without": [], "with": []}
    cpu: dict[str, list[float]] = {"without": [], "with": []}
    with private_redis(Path(".bench/metrics-cost").resolve(), None) as port:
        url = f"redis://127.0.0.1:{port}/0"
        asyncio.run(drain(url, min(args.n, 2000), metered=False, scrape=args.scrape))  # warm up
        for round_ in range(args.rounds):
            variants = [("without", False), ("with", True)]
            for label, metered in variants if round_ % 2 == 0 else variants[::-1]:
                rate, used = asyncio.run(drain(url, args.n, metered=metered, scrape=args.scrape))
                figures[label].append(rate)
                cpu[label].append(used)
                print(
                    f"round {round_ + 1} {label:>7} metrics: {rate:6.0f} jobs/s, "
                    f"{used:5.0f} µs CPU per job",
                    file=sys.stderr,
                )
    without, with_ = (statistics.median(figures[k]) for k in ("without", "with"))
    cpu_without, cpu_with = (statistics.median(cpu[k]) for k in ("without", "with"))
    print(f"{args.n} jobs, concurrency {CONCURRENCY}, median of {args.rounds} rounds:")
    print(f"  without metrics {without:7.0f} jobs/s  {cpu_without:5.0f} µs CPU per job")
    print(
        f"  with metrics    {with_:7.0f} jobs/s  {cpu_with:5.0f} µs CPU per job"
        f"  (scraped every {args.scrape:g}s)"
    )
    print(
        f"  cost: throughput {100 * (1 - with_ / without):.1f} %, "
        f"CPU per job {100 * (cpu_with / cpu_without - 1):.1f} %"
    )
    scrape_ms = statistics.median(SCRAPE_MS)
    print(
        f"  one scrape: {scrape_ms:.1f} ms of the worker's CPU; at Prometheus' usual 15 s "
        f"interval {scrape_ms / 150:.2f} % of a core"
    )
    micro = per_job_cost()
    print(
        f"  observer + subscriber alone: {micro:.2f} µs per job "
        f"({100 * micro / cpu_without:.1f} % of a job's CPU without metrics)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
