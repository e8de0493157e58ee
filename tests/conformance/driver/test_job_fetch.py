"""job_fetch: ordering, schedules, paused queues, leases, and exclusivity under concurrency."""

from __future__ import annotations

import asyncio
import threading

import pytest

from conveyor.backends.registry import driver_for_url
from conveyor.drivers.protocol import Driver
from conveyor.drivers.records import FetchParams, JobState, TransitionKind

from ._support import LEASE, T0, fetch, fetch_one, finish, get, insert, new_job


async def test_lower_priority_runs_first_then_enqueue_order(driver: Driver) -> None:
    await driver.job_insert_many(
        [
            new_job("p5-a", priority=5),
            new_job("p0-a", priority=0),
            new_job("p5-b", priority=5),
            new_job("neg", priority=-3),
            new_job("p0-b", priority=0),
        ],
        now=T0,
    )
    await insert(driver, "p0-c", now=T0)  # a later batch, same run time
    fetched = [j.id for j in await fetch(driver, limit=10)]
    assert fetched == ["neg", "p0-a", "p0-b", "p0-c", "p5-a", "p5-b"]


async def test_order_holds_across_successive_fetches(driver: Driver) -> None:
    await driver.job_insert_many([new_job(f"j{i}", priority=i % 2) for i in range(6)], now=T0)
    seen = [j.id for _ in range(3) for j in await fetch(driver, limit=2)]
    assert seen == ["j0", "j2", "j4", "j1", "j3", "j5"]


async def test_equal_priority_runs_the_earlier_run_time_first(driver: Driver) -> None:
    await insert(driver, "late", run_at=T0 - 1, now=T0)
    await insert(driver, "early", run_at=T0 - 10, now=T0)
    await insert(driver, "earliest", run_at=T0 - 20, now=T0)
    # One at a time: the choice under a limit must follow the order, not only the sorting.
    assert [(await fetch_one(driver)).id for _ in range(2)] == ["earliest", "early"]
    assert [j.id for j in await fetch(driver)] == ["late"]


async def test_limit_picks_the_first_jobs_in_order(driver: Driver) -> None:
    await insert(driver, "p1", priority=1, now=T0)
    await insert(driver, "late", run_at=T0 - 1, now=T0)
    await insert(driver, "mid", run_at=T0 - 5, now=T0)
    await insert(driver, "early", run_at=T0 - 10, now=T0)
    assert [j.id for j in await fetch(driver, limit=2)] == ["early", "mid"]


async def test_delayed_job_is_not_fetched_before_its_run_time(driver: Driver) -> None:
    await insert(driver, "later", delay=60, now=T0)
    assert await fetch(driver, now=T0 + 59.9) == []
    job = await fetch_one(driver, now=T0 + 60)
    assert job.id == "later" and job.state is JobState.ACTIVE


async def test_fetch_leases_the_job(driver: Driver) -> None:
    await insert(driver, "a", now=T0)
    job = await fetch_one(driver, now=T0 + 2, worker_id="w-7", lease=45)
    assert job.state is JobState.ACTIVE and job.attempt == 1
    assert job.worker_id == "w-7" and job.started_at == T0 + 2
    assert job.lease_expires_at == T0 + 2 + 45
    assert job.lease_token and len(job.lease_token) >= 16
    assert await get(driver, "a") == job


async def test_every_attempt_gets_a_new_lease_token(driver: Driver) -> None:
    await insert(driver, "a", now=T0)
    first = await fetch_one(driver)
    await finish(driver, first, TransitionKind.REQUEUE)
    second = await fetch_one(driver)
    assert second.lease_token != first.lease_token


async def test_fetch_respects_limit_and_queues(driver: Driver) -> None:
    await insert(driver, "a", "b", "c", now=T0)
    await insert(driver, "x", queue="other", now=T0)
    assert [j.id for j in await fetch(driver, limit=2)] == ["a", "b"]
    assert [j.id for j in await fetch(driver, limit=5, queues=("other", "default"))] == ["c", "x"]
    assert await fetch(driver, limit=5, queues=("other", "default")) == []


async def test_due_retrying_job_is_fetched_like_a_queued_one(driver: Driver) -> None:
    await insert(driver, "a", now=T0)
    job = await fetch_one(driver)
    await finish(driver, job, TransitionKind.RETRY, delay=10, error="boom")
    assert await fetch(driver, now=T0 + 9) == []
    again = await fetch_one(driver, now=T0 + 10)
    assert again.attempt == 2 and again.error == "boom"


async def test_paused_queue_is_not_fetched_until_resumed(driver: Driver) -> None:
    await insert(driver, "a", now=T0)
    await insert(driver, "x", queue="other", now=T0)
    await driver.queue_pause("default")
    assert [j.id for j in await fetch(driver, queues=("default", "other"))] == ["x"]
    await driver.queue_resume("default")
    assert [j.id for j in await fetch(driver)] == ["a"]


async def test_pausing_an_empty_queue_holds_jobs_inserted_later(driver: Driver) -> None:
    await driver.queue_pause("default")
    await insert(driver, "a", now=T0)
    assert await fetch(driver) == []
    await driver.queue_resume("default")
    assert [j.id for j in await fetch(driver)] == ["a"]


async def test_concurrent_fetchers_on_separate_connections_share_without_overlap(
    driver: Driver,
) -> None:
    total = 120
    await driver.job_insert_many([new_job(f"j{i:03}") for i in range(total)], now=T0)
    others = [driver.connect_another() for _ in range(4)]
    for other in others:
        await other.open()
    try:

        async def drain(d: Driver, worker: str) -> list[str]:
            got: list[str] = []
            while batch := await fetch(d, limit=3, worker_id=worker):
                got.extend(j.id for j in batch)
            return got

        results = await asyncio.gather(*(drain(d, f"w{n}") for n, d in enumerate(others)))
    finally:
        for other in others:
            await other.close()
    everything = [job_id for got in results for job_id in got]
    assert len(everything) == len(set(everything)) == total


def test_fetchers_in_several_threads_never_get_the_same_job(backend_url: str) -> None:
    # Each thread runs its own event loop and its own driver on the same store (memory:// URLs
    # with one name share a store), as the lease keeper thread and separate workers do.
    total, threads = 200, 4
    seen: list[list[str]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []

    async def setup() -> None:
        d = driver_for_url(backend_url)
        await d.open()
        await d.job_insert_many([new_job(f"j{i:03}") for i in range(total)], now=T0)
        await d.close()

    async def drain(n: int, start: threading.Barrier) -> None:
        d = driver_for_url(backend_url)
        await d.open()
        try:
            start.wait(timeout=30)
            while batch := await fetch(d, limit=2, worker_id=f"t{n}", lease=LEASE):
                seen[n].extend(j.id for j in batch)
        finally:
            await d.close()

    def run(n: int, start: threading.Barrier) -> None:
        try:
            asyncio.run(drain(n, start))
        except BaseException as exc:
            errors.append(exc)

    asyncio.run(setup())
    barrier = threading.Barrier(threads)
    workers = [threading.Thread(target=run, args=(n, barrier)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert not errors, errors
    everything = [job_id for got in seen for job_id in got]
    assert len(everything) == len(set(everything)) == total


@pytest.mark.parametrize("limit", [0, -1])
async def test_non_positive_limit_fetches_nothing(driver: Driver, limit: int) -> None:
    await insert(driver, "a", "b", "c", now=T0)
    assert await fetch(driver, limit=limit) == []
    assert [(await get(driver, i)).state for i in "abc"] == [JobState.QUEUED] * 3


async def test_a_fetch_promotes_every_due_job_of_its_served_queues(driver: Driver) -> None:
    # The contract every backend shares: a fetch first moves its queues' due scheduled and
    # retrying jobs to queued (beyond its limit too), then leases queued jobs in run order.
    await insert(driver, "due-1", "due-2", "due-3", delay=5, now=T0)
    await insert(driver, "later", delay=60, now=T0)
    await insert(driver, "other-queue", queue="elsewhere", delay=5, now=T0)
    await insert(driver, "paused", queue="stopped", delay=5, now=T0)
    await driver.queue_pause("stopped")

    (first,) = await fetch(driver, now=T0 + 10, limit=1, queues=("default", "stopped"))
    assert first.id == "due-1"
    assert (await get(driver, "due-2")).state is JobState.QUEUED
    assert (await get(driver, "due-3")).state is JobState.QUEUED
    assert (await get(driver, "later")).state is JobState.SCHEDULED
    assert (await get(driver, "other-queue")).state is JobState.SCHEDULED  # not served
    assert (await get(driver, "paused")).state is JobState.SCHEDULED  # paused: untouched


# -- fetching with a wait: what an idle worker does ---------------------------------------------


async def test_a_waiting_fetch_returns_a_job_inserted_meanwhile_by_another_connection(
    driver: Driver,
) -> None:
    producer = driver.connect_another()
    await producer.open()
    try:
        params = FetchParams(("default",), 10, "worker-1", LEASE)
        waiting = asyncio.create_task(driver.job_fetch(params, wait=10.0))
        await asyncio.sleep(0.05)  # let it start waiting
        await insert(producer, "a", now=T0)
        [job] = await asyncio.wait_for(waiting, timeout=5)
        assert job.id == "a" and job.state is JobState.ACTIVE and job.attempt == 1
    finally:
        await producer.close()


async def test_a_waiting_fetch_with_nothing_to_do_returns_empty_after_its_wait(
    driver: Driver,
) -> None:
    params = FetchParams(("default",), 10, "worker-1", LEASE)
    assert await asyncio.wait_for(driver.job_fetch(params, wait=0.2), timeout=5) == []


async def test_a_cancelled_waiting_fetch_leaves_no_job_leased(driver: Driver) -> None:
    params = FetchParams(("default",), 10, "worker-1", LEASE)
    waiting = asyncio.create_task(driver.job_fetch(params, wait=10.0))
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await insert(driver, "a", now=T0)
    assert (await get(driver, "a")).state is JobState.QUEUED
    assert [j.id for j in await fetch(driver)] == ["a"]


async def test_a_backend_that_filters_by_name_leases_only_the_names_asked_for(
    driver: Driver,
) -> None:
    """With Capability.FETCH_BY_NAME a worker never gets a job it has no handler for; without
    it, the names are a hint the backend may ignore (the worker hands such jobs back)."""
    from conveyor.drivers.protocol import Capability

    await insert(driver, "new-kind", name="report.build", now=T0)
    await insert(driver, "known", name="email.send", now=T0)
    params = FetchParams(("default",), 10, "old-worker", LEASE, names=("email.send",))
    fetched = [j.id for j in await driver.job_fetch(params, now=T0)]
    if Capability.FETCH_BY_NAME in driver.capabilities:
        assert fetched == ["known"]
        assert (await get(driver, "new-kind")).state is JobState.QUEUED
        # Once it has waited ``unknown_after``, it is handed out, to be failed as unknown.
        waited = FetchParams(("default",), 10, "w", LEASE, ("email.send",), unknown_after=60)
        assert await driver.job_fetch(waited, now=T0 + 59) == []
        assert [j.id for j in await driver.job_fetch(waited, now=T0 + 60)] == ["new-kind"]
    else:
        assert fetched == ["new-kind", "known"]


async def test_a_name_filtered_fetch_finds_its_jobs_behind_many_of_other_names(
    driver: Driver,
) -> None:
    """A worker serving some names must reach its jobs however many jobs of other names wait
    ahead of them (a second fleet's backlog), in run order, and the unknown-name rule still
    reaches the oldest jobs of other names."""
    from conveyor.drivers.protocol import Capability

    ahead = [f"report-{n:03}" for n in range(300)]
    await insert(driver, *ahead, name="report.build", now=T0)
    await insert(driver, "mail-late", name="email.send", now=T0 + 2)
    await insert(driver, "mail-urgent", name="email.send", priority=-5, now=T0 + 2)
    await insert(driver, "mail-early", name="email.send", now=T0 + 1)
    await insert(driver, "sms", name="sms.send", now=T0 + 2)
    params = FetchParams(("default",), 3, "mail-worker", LEASE, names=("email.send", "sms.send"))
    fetched = [j.id for j in await driver.job_fetch(params, now=T0 + 10)]
    if Capability.FETCH_BY_NAME not in driver.capabilities:
        # The names are a hint this backend ignores: plain run order (the worker hands back).
        assert fetched == ["mail-urgent", "report-000", "report-001"]
        return
    assert fetched == ["mail-urgent", "mail-early", "mail-late"]
    again = [j.id for j in await driver.job_fetch(params, now=T0 + 10)]
    assert again == ["sms"]
    # An hour on, the oldest report jobs count as unknown to every worker that came.
    waited = FetchParams(("default",), 2, "w", LEASE, ("email.send",), unknown_after=3600)
    assert [j.id for j in await driver.job_fetch(waited, now=T0 + 3600)] == ahead[:2]


async def test_a_job_no_worker_knows_is_offered_past_urgent_jobs_that_are_not_old_enough(
    driver: Driver,
) -> None:
    """Before, on SQLite: the unknown-name rule looked only at the oldest jobs by sequence, so
    a batch of urgent jobs of another name, enqueued first but due an hour later, hid a job no
    worker knows past its grace period."""
    from conveyor.drivers.protocol import Capability

    batch = [f"b{n:03}" for n in range(100)]
    await insert(driver, *batch, name="b", priority=-1, run_at=T0 + 3600, now=T0)
    await insert(driver, "x", name="x", now=T0 + 1)
    now = T0 + 3610
    await driver.job_promote_due(limit=1000, now=now)
    params = FetchParams(("default",), 1, "w", LEASE, ("a",), unknown_after=3600)
    fetched = [j.id for j in await driver.job_fetch(params, now=now)]
    if Capability.FETCH_BY_NAME in driver.capabilities:
        assert fetched == ["x"]
    else:
        assert fetched == ["b000"]  # plain run order: the names are a hint
