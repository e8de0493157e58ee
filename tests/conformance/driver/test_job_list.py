"""job_get_many, job_list (keyset pagination, newest first) and job_count_by_state."""

from __future__ import annotations

import pytest

from conveyor.drivers.protocol import Driver
from conveyor.drivers.records import JobState, ListParams, TransitionKind

from ._support import T0, fetch, finish, get, insert


async def test_get_many_keeps_input_order_with_none_for_missing(driver: Driver) -> None:
    await insert(driver, "a", "b", now=T0)
    jobs = await driver.job_get_many(["b", "ghost", "a", "b"])
    assert [j.id if j else None for j in jobs] == ["b", None, "a", "b"]
    assert await driver.job_get_many([]) == []


async def test_list_is_newest_first_and_pages_by_keyset(driver: Driver) -> None:
    ids = [f"j{n}" for n in range(7)]
    for job_id in ids:
        await insert(driver, job_id, now=T0)
    pages: list[list[str]] = []
    cursor: int | None = None
    while page := await driver.job_list(ListParams(before_seq=cursor, limit=3)):
        pages.append([j.id for j in page])
        cursor = page[-1].seq
    assert pages == [["j6", "j5", "j4"], ["j3", "j2", "j1"], ["j0"]]


async def test_list_pagination_is_stable_while_jobs_are_added(driver: Driver) -> None:
    await insert(driver, "a", "b", "c", now=T0)
    first = await driver.job_list(ListParams(limit=2))
    await insert(driver, "d", now=T0)
    rest = await driver.job_list(ListParams(limit=2, before_seq=first[-1].seq))
    assert [j.id for j in first + rest] == ["c", "b", "a"]


async def test_list_filters_by_queue_states_and_name(driver: Driver) -> None:
    await insert(driver, "a", name="x", now=T0)
    await insert(driver, "b", name="y", now=T0)
    await insert(driver, "c", name="x", queue="other", now=T0)
    [job] = await fetch(driver, limit=1)
    await finish(driver, job)

    async def listed(**filters: object) -> list[str]:
        return [j.id for j in await driver.job_list(ListParams(**filters))]  # type: ignore[arg-type]

    assert await listed() == ["c", "b", "a"]
    assert await listed(queue="default") == ["b", "a"]
    assert await listed(name="x") == ["c", "a"]
    assert await listed(states=(JobState.COMPLETED,)) == ["a"]
    assert await listed(states=(JobState.QUEUED, JobState.COMPLETED), queue="default") == ["b", "a"]
    assert await listed(queue="nope") == []
    assert await listed(limit=0) == []


async def test_count_by_state_reports_every_state(driver: Driver) -> None:
    await insert(driver, "a", "b", now=T0)
    await insert(driver, "s", delay=5, now=T0)
    await insert(driver, "o", queue="other", now=T0)
    [job] = await fetch(driver, limit=1)
    counts = await driver.job_count_by_state()
    assert counts == {
        JobState.SCHEDULED: 1,
        JobState.QUEUED: 2,
        JobState.ACTIVE: 1,
        JobState.RETRYING: 0,
        JobState.COMPLETED: 0,
        JobState.FAILED: 0,
        JobState.CANCELLED: 0,
    }
    per_queue = await driver.job_count_by_state("default")
    assert per_queue[JobState.QUEUED] == 1 and sum(per_queue.values()) == 3
    assert sum((await driver.job_count_by_state("nope")).values()) == 0
    assert (await get(driver, job.id)).state is JobState.ACTIVE


@pytest.mark.parametrize("limit", [0, -1])
async def test_non_positive_limit_lists_nothing(driver: Driver, limit: int) -> None:
    await insert(driver, "a", "b", "c", now=T0)
    assert await driver.job_list(ListParams(limit=limit)) == []


async def test_pages_across_states_and_queues_merge_newest_first(driver: Driver) -> None:
    """Each (queue, state) is its own index range; a page merges their newest entries."""
    await insert(driver, *[f"d{n}" for n in range(6)], now=T0)
    await insert(driver, *[f"o{n}" for n in range(4)], queue="other", now=T0)
    await insert(driver, "later", delay=60, now=T0)
    done = await fetch(driver, limit=3)  # d0, d1, d2
    for job in done[:2]:
        await finish(driver, job)
    everything = [j.id for j in await driver.job_list(ListParams(limit=100))]
    assert everything == ["later", "o3", "o2", "o1", "o0", "d5", "d4", "d3", "d2", "d1", "d0"]
    pages: list[str] = []
    cursor: int | None = None
    states = (JobState.QUEUED, JobState.ACTIVE, JobState.COMPLETED)
    while page := await driver.job_list(ListParams(states=states, before_seq=cursor, limit=4)):
        pages += [j.id for j in page]
        cursor = page[-1].seq
    assert pages == [i for i in everything if i != "later"]


async def test_a_rare_state_pages_by_its_own_keyset(driver: Driver) -> None:
    ids = [f"j{n:03}" for n in range(60)]
    await insert(driver, *ids, now=T0)
    jobs = await fetch(driver, limit=60)
    for job in jobs:
        kind = TransitionKind.FAIL if job.id in ("j005", "j040", "j059") else None
        if kind is None:
            await finish(driver, job)
        else:
            await finish(driver, job, kind, error="x")
    failed = await driver.job_list(ListParams(states=(JobState.FAILED,), limit=2))
    assert [j.id for j in failed] == ["j059", "j040"]
    older = await driver.job_list(
        ListParams(states=(JobState.FAILED,), limit=2, before_seq=failed[-1].seq)
    )
    assert [j.id for j in older] == ["j005"]
