"""A rate limit held across real worker processes and a real clock: 20 jobs' worth of
concurrency (four processes of five) against ``Rate(50, per=1 s)`` never start more than 50 jobs
in any one-second window, and still start close to 50 a second."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from tests.process.app.jobs import Quick
from tests.process.app.rate_worker import RATE, rated
from tests.process.harness import Harness, wait_for

pytestmark = [pytest.mark.process, pytest.mark.timeout(300)]

JOBS = 300
PROCESSES = 4


def most_in_any_window(starts: Sequence[float], per: float) -> int:
    """The most starts in any half-open window ``[t, t + per)``."""
    ordered = sorted(starts)
    best, first = 0, 0
    for last, at in enumerate(ordered):
        while ordered[first] + per <= at:
            first += 1
        best = max(best, last - first + 1)
    return best


def test_workers_on_several_processes_share_one_rate_limit(harness: Harness) -> None:
    h = harness
    workers = [
        h.start_worker(target="tests.process.app.rate_worker:worker") for _ in range(PROCESSES)
    ]
    for w in workers:
        w.wait_log("rate limits: rated: 50 per 1s", timeout=60)
    ids = [f"rated-{i:03d}" for i in range(JOBS)]
    h.queue.enqueue_many([rated.request(Quick(n=n), job_id=i) for n, i in enumerate(ids)])

    def all_done() -> bool:
        return h.counts().get("completed", 0) == JOBS

    wait_for(all_done, timeout=120, what=f"{JOBS} rated jobs to complete", every=0.2)

    # The starts the limit governs: each job's lease, as the backend recorded it.
    infos = [h.job(i) for i in ids]
    leased = [info.started_at.timestamp() for info in infos if info.started_at is not None]
    assert len(leased) == JOBS
    assert most_in_any_window(leased, RATE.per) <= RATE.count
    # The handlers' own start times, from the side ledger: each job ran once. A handler begins
    # a moment after its lease (the time its process takes to get to it: up to tens of
    # milliseconds on a loaded machine: the ledger's writes block), so a window a quarter of a
    # second shorter than the limit's is checked (a full one can hold a few more: a job leased
    # early in one window and entered late, beside the next window's jobs entered promptly).
    events = h.events(event="start")
    assert sorted(e["job_id"] for e in events) == sorted(ids)
    entered = [e["at"] for e in events]
    assert most_in_any_window(entered, RATE.per - 0.25) <= RATE.count
    # Throughput close to the limit: the first five windows hold close to five windows' worth
    # of starts (never more), where a limiter that waited for a poll or a notification after
    # each window, or lost time on each, would fall well short.
    first = min(leased)
    windows = 5
    in_windows = sum(1 for at in leased if at < first + windows * RATE.per)
    rate = in_windows / (windows * RATE.per)
    assert rate >= 0.9 * RATE.count, f"only {rate:.1f} starts/s"
    for w in workers:
        assert w.alive(), w.log()
    assert h.store_problems() == []
