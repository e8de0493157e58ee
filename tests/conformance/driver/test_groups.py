"""Groups inside job_fetch: per-key concurrency, per-key rate limits and round-robin serving
(see :mod:`conveyor.drivers.groups`), on every path a grouped job takes, with a fake clock."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import Sequence

import pytest

from conveyor._errors import InvalidArgument
from conveyor.drivers.protocol import Capability, Driver
from conveyor.drivers.records import (
    FetchParams,
    JobGroup,
    JobRecord,
    JobState,
    ListParams,
    NewJob,
    PurgeParams,
    RateLimit,
    Retention,
    TransitionKind,
)

from ._support import LEASE, QUEUE, T0, exists, fetch, finish, get, new_job, rescue

SERIAL = JobGroup("mail:acct-a", concurrency=1)


def grouped(
    job_id: str,
    key: str,
    *,
    concurrency: int = 0,
    rate: tuple[int, float] = (0, 0.0),
    name: str = "test.job",
    **options: object,
) -> NewJob:
    job = new_job(job_id, name=name, **options)  # type: ignore[arg-type]
    group = JobGroup(key, concurrency=concurrency, rate_count=rate[0], rate_per=rate[1])
    return dataclasses.replace(job, group=group)


async def put(driver: Driver, *jobs: NewJob, now: float = T0) -> None:
    await driver.job_insert_many(list(jobs), now=now)


def ids(jobs: Sequence[JobRecord]) -> list[str]:
    return [j.id for j in jobs]


async def test_a_grouped_job_is_stored_listed_and_counted_with_its_group(driver: Driver) -> None:
    await put(driver, grouped("g1", "k:a", concurrency=1), new_job("p1"))
    job = await get(driver, "g1")
    assert job.group == "k:a" and job.state is JobState.QUEUED
    assert (await get(driver, "p1")).group is None
    listed = await driver.job_list(ListParams(queue=QUEUE, states=(JobState.QUEUED,)))
    assert sorted(ids(listed)) == ["g1", "p1"]
    counts = await driver.job_count_by_state(QUEUE)
    assert counts.get(JobState.QUEUED) == 2
    [leased] = [j for j in await fetch(driver, limit=2) if j.id == "g1"]
    assert leased.group == "k:a" and leased.state is JobState.ACTIVE
    assert (await driver.job_count_by_state(QUEUE)).get(JobState.ACTIVE) == 2


async def test_a_serial_group_runs_one_job_at_a_time(driver: Driver) -> None:
    await put(driver, *(grouped(f"a{i}", "k:a", concurrency=1) for i in range(3)))
    [first] = await fetch(driver, limit=10)
    assert first.id == "a0"
    assert await fetch(driver, now=T0 + 1, limit=10) == []
    assert (await get(driver, "a1")).state is JobState.QUEUED
    await finish(driver, first, now=T0 + 2)
    assert ids(await fetch(driver, now=T0 + 3, limit=10)) == ["a1"]


async def test_a_group_runs_up_to_its_concurrency(driver: Driver) -> None:
    await put(driver, *(grouped(f"a{i}", "k:a", concurrency=2) for i in range(5)))
    first = await fetch(driver, limit=10)
    assert ids(first) == ["a0", "a1"]
    assert await fetch(driver, now=T0 + 1) == []
    await finish(driver, first[1], now=T0 + 2)
    assert ids(await fetch(driver, now=T0 + 3)) == ["a2"]


async def test_groups_are_served_one_job_per_group_per_round(driver: Driver) -> None:
    await put(driver, *(grouped(f"a{i}", "k:a") for i in range(20)), now=T0)
    await put(driver, grouped("b0", "k:b"), now=T0 + 1)
    await put(driver, grouped("c0", "k:c"), grouped("c1", "k:c"), now=T0 + 2)
    jobs = await fetch(driver, now=T0 + 3, limit=7)
    # Round one: a0, b0, c0; round two: a1, c1; then a alone.
    assert Counter(j.group for j in jobs) == {"k:a": 4, "k:b": 1, "k:c": 2}
    assert set(ids(jobs)) == {"a0", "a1", "a2", "a3", "b0", "c0", "c1"}
    assert ids(jobs)[:3] == ["a0", "b0", "c0"]  # turn order: the oldest group first


async def test_a_group_holding_a_flood_cannot_starve_a_single_job(driver: Driver) -> None:
    flood = 100_000
    batch = 5_000
    for start in range(0, flood, batch):
        await put(
            driver,
            *(grouped(f"t1-{i:06d}", "tenant:1") for i in range(start, start + batch)),
            now=T0,
        )
    # The flooding tenant has been served for a while when the other tenant's job arrives.
    now = T0 + 1
    for _ in range(3):
        jobs = await fetch(driver, now=now, limit=10)
        assert len(jobs) == 10 and {j.group for j in jobs} == {"tenant:1"}
        now += 1
    await put(driver, grouped("t2-only", "tenant:2"), now=now)
    served = await fetch(driver, now=now + 1, limit=10)
    assert "t2-only" in ids(served)  # in the very next fetch, not after 100,000 jobs
    assert (await get(driver, "t2-only")).state is JobState.ACTIVE


async def test_a_groups_own_jobs_run_in_priority_then_run_time_order(driver: Driver) -> None:
    await put(
        driver,
        grouped("late", "k:a", run_at=T0 - 1),
        grouped("early", "k:a", run_at=T0 - 5),
        grouped("urgent", "k:a", priority=-5, run_at=T0 - 0.5),
        grouped("lazy", "k:a", priority=5, run_at=T0 - 9),
    )
    assert ids(await fetch(driver, now=T0, limit=10)) == ["urgent", "early", "late", "lazy"]


async def test_grouped_and_plain_jobs_share_a_fetch(driver: Driver) -> None:
    await put(driver, *(grouped(f"g{i}", f"k:{i}") for i in range(10)))
    await put(driver, *(new_job(f"p{i}") for i in range(10)))
    jobs = await fetch(driver, limit=4)
    assert Counter(j.group is None for j in jobs) == {True: 2, False: 2}
    # With only one kind left runnable, it takes the whole limit.
    await driver.job_cancel_many([f"p{i}" for i in range(10)])
    assert len(await fetch(driver, now=T0 + 1, limit=4)) == 4


async def test_one_side_takes_what_the_other_leaves(driver: Driver) -> None:
    await put(driver, *(grouped(f"g{i}", "k:a", concurrency=1) for i in range(5)))
    await put(driver, *(new_job(f"p{i}") for i in range(10)))
    jobs = await fetch(driver, limit=6)
    assert Counter(j.group is None for j in jobs) == {True: 5, False: 1}


async def test_fetches_of_one_job_serve_grouped_and_plain_jobs_alike(driver: Driver) -> None:
    await put(driver, *(grouped(f"g{i:02d}", f"k:{i}") for i in range(60)))
    await put(driver, *(new_job(f"p{i:02d}") for i in range(60)))
    kinds = Counter[bool]()
    for step in range(60):
        [job] = await fetch(driver, now=T0 + step, limit=1)
        kinds[job.group is None] += 1
    # A fair coin: each side's share is far from starved (the odds of failing are ~1e-9).
    assert kinds[True] >= 10 and kinds[False] >= 10


@pytest.mark.parametrize(
    "kind",
    [
        TransitionKind.COMPLETE,
        TransitionKind.FAIL,
        TransitionKind.CANCEL,
        TransitionKind.RETRY,
        TransitionKind.SNOOZE,
        TransitionKind.REQUEUE,
    ],
)
async def test_every_way_out_of_active_frees_the_groups_place(
    driver: Driver, kind: TransitionKind
) -> None:
    await put(driver, grouped("a", "k:a", concurrency=1), grouped("b", "k:a", concurrency=1))
    [first] = await fetch(driver, limit=5)
    assert first.id == "a"
    later = kind in (TransitionKind.RETRY, TransitionKind.SNOOZE)
    error = "boom" if kind in (TransitionKind.FAIL, TransitionKind.RETRY) else None
    await finish(driver, first, kind, now=T0 + 1, delay=1000.0 if later else 0.0, error=error)
    after = await fetch(driver, now=T0 + 2, limit=5)
    assert len(after) == 1, "the group's next job starts once one left active"
    assert await fetch(driver, now=T0 + 3, limit=5) == []


async def test_a_rescue_frees_the_groups_place_and_requeues_into_the_group(
    driver: Driver,
) -> None:
    await put(driver, grouped("a0", "k:a", concurrency=1), grouped("a1", "k:a", concurrency=1))
    [first] = await fetch(driver, limit=5)
    assert first.id == "a0"
    done = await rescue(driver, now=T0 + LEASE + 1)
    assert done["requeue"] == ["a0"]
    again = await fetch(driver, now=T0 + LEASE + 2, limit=5)
    assert len(again) == 1 and again[0].group == "k:a"
    # Still one at a time after the rescue.
    assert await fetch(driver, now=T0 + LEASE + 3, limit=5) == []


async def test_due_retries_and_scheduled_jobs_join_their_group(driver: Driver) -> None:
    await put(driver, grouped("later", "k:a", concurrency=1, run_at=T0 + 100))
    assert await fetch(driver, now=T0 + 1) == []
    [job] = await fetch(driver, now=T0 + 100)
    assert job.id == "later"
    await finish(driver, job, TransitionKind.RETRY, now=T0 + 100, delay=50.0, error="flaky")
    assert await fetch(driver, now=T0 + 120) == []
    [again] = await fetch(driver, now=T0 + 151)
    assert again.id == "later" and again.attempt == 2 and again.group == "k:a"


async def test_cancel_purge_and_retry_keep_the_group_consistent(driver: Driver) -> None:
    await put(driver, *(grouped(f"a{i}", "k:a", concurrency=1) for i in range(3)))
    await driver.job_cancel_many(["a0"])
    [job] = await fetch(driver, limit=5)
    assert job.id == "a1"
    await finish(driver, job, TransitionKind.FAIL, error="bad")
    # A retried job goes back into its group, behind the concurrency limit like any other.
    await driver.job_retry_many(["a1"], now=T0 + 1)
    [nxt] = await fetch(driver, now=T0 + 2, limit=5)
    assert nxt.id in ("a1", "a2")
    assert await fetch(driver, now=T0 + 3, limit=5) == []
    await finish(driver, nxt, now=T0 + 4)
    [last] = await fetch(driver, now=T0 + 5, limit=5)
    assert {nxt.id, last.id} == {"a1", "a2"}
    await finish(driver, last, now=T0 + 6)
    # Purging a waiting grouped job takes it out of its group: nothing is left to serve.
    await put(driver, grouped("x0", "k:x"), now=T0 + 7)
    await driver.job_purge(PurgeParams(queue=QUEUE, states=(JobState.QUEUED,)), now=T0 + 8)
    assert not await exists(driver, "x0")
    assert await fetch(driver, now=T0 + 9, limit=5) == []


async def test_a_group_rate_limits_its_own_starts_only(driver: Driver) -> None:
    await put(driver, *(grouped(f"a{i}", "k:a", rate=(2, 1.0)) for i in range(10)))
    await put(driver, *(grouped(f"b{i}", "k:b") for i in range(10)))
    first = await fetch(driver, limit=6)
    assert Counter(j.group for j in first) == {"k:a": 2, "k:b": 4}
    held = await fetch(driver, now=T0 + 0.5, limit=6)
    assert {j.group for j in held} == {"k:b"}
    # The group's next turn is when its window frees, exactly one window after its starts.
    assert await driver.group_wait([QUEUE], now=T0 + 0.6) == pytest.approx(0.4, abs=1e-3)
    third = await fetch(driver, now=T0 + 1.0, limit=6)
    assert Counter(j.group for j in third)["k:a"] == 2


async def test_no_window_of_a_group_holds_more_than_its_rate(driver: Driver) -> None:
    await put(driver, *(grouped(f"a{i:02d}", "k:a", rate=(3, 1.0)) for i in range(40)))
    now = T0
    for step in range(30):
        await fetch(driver, now=now, limit=1 + step % 4)
        now += 0.11 + (step % 3) * 0.07
    started = sorted(
        j.started_at
        for j in await driver.job_get_many([f"a{i:02d}" for i in range(40)])
        if j is not None and j.started_at is not None
    )
    assert len(started) > 6
    assert (
        max(sum(1 for s in started[i:] if s < first + 1.0) for i, first in enumerate(started)) <= 3
    )


async def test_a_queue_rate_limit_counts_grouped_starts(driver: Driver) -> None:
    await put(driver, *(grouped(f"g{i}", f"k:{i}") for i in range(5)))
    await put(driver, *(new_job(f"p{i}") for i in range(5)))
    params = FetchParams((QUEUE,), 10, "worker-1", LEASE, rate_limits=(RateLimit(QUEUE, 3, 1.0),))
    assert len(await driver.job_fetch(params, now=T0)) == 3
    assert await driver.job_fetch(params, now=T0 + 0.5) == []


async def test_a_blocked_group_waits_while_others_run(driver: Driver) -> None:
    await put(driver, *(grouped(f"a{i}", "k:a") for i in range(3)), grouped("b0", "k:b"))
    await put(driver, new_job("p0"))
    await driver.group_block(QUEUE, "k:a", 5.0, now=T0)
    assert set(ids(await fetch(driver, now=T0 + 1, limit=10))) == {"b0", "p0"}
    assert await driver.group_wait([QUEUE], now=T0 + 1) == pytest.approx(4.0, abs=1e-3)
    # A shorter block does not shorten the one in force.
    await driver.group_block(QUEUE, "k:a", 1.0, now=T0 + 2)
    assert await fetch(driver, now=T0 + 4.9, limit=10) == []
    assert ids(await fetch(driver, now=T0 + 5, limit=10)) == ["a0", "a1", "a2"]
    assert await driver.group_wait([QUEUE], now=T0 + 6) is None


async def test_a_block_before_the_groups_first_job_stands(driver: Driver) -> None:
    await driver.group_block(QUEUE, "k:new", 10.0, now=T0)
    await put(driver, grouped("n0", "k:new"), now=T0 + 1)
    assert await fetch(driver, now=T0 + 2) == []
    assert ids(await fetch(driver, now=T0 + 10)) == ["n0"]


async def test_group_wait_ignores_full_groups_and_other_queues(driver: Driver) -> None:
    assert await driver.group_wait([QUEUE], now=T0) is None
    await put(driver, *(grouped(f"a{i}", "k:a", concurrency=1) for i in range(2)))
    await fetch(driver, limit=5)
    # Full: it waits for a finish, not for time.
    assert await driver.group_wait([QUEUE], now=T0 + 1) is None
    await driver.group_block("other", "k:z", 5.0, now=T0)
    await driver.job_insert_many([grouped("z0", "k:z", queue="other")], now=T0)
    assert await driver.group_wait([QUEUE], now=T0 + 1) is None
    assert await driver.group_wait(["other", QUEUE], now=T0 + 1) == pytest.approx(4.0, abs=1e-3)


async def test_the_latest_job_sets_its_groups_limits(driver: Driver) -> None:
    await put(driver, *(grouped(f"a{i}", "k:a", concurrency=1) for i in range(2)))
    assert len(await fetch(driver, limit=5)) == 1
    await put(driver, *(grouped(f"b{i}", "k:a", concurrency=3) for i in range(3)), now=T0 + 1)
    assert len(await fetch(driver, now=T0 + 2, limit=5)) == 2


async def test_a_paused_queue_serves_no_group(driver: Driver) -> None:
    await put(driver, grouped("a0", "k:a"))
    await driver.queue_pause(QUEUE)
    assert await fetch(driver) == []
    await driver.queue_resume(QUEUE)
    assert ids(await fetch(driver)) == ["a0"]


async def test_groups_are_scoped_to_their_queue(driver: Driver) -> None:
    await driver.job_insert_many(
        [grouped("m0", "k:a", concurrency=1, queue="mail"), grouped("m1", "k:a", concurrency=1)],
        now=T0,
    )
    assert len(await fetch(driver, queues=("mail", QUEUE), limit=5)) == 2


async def test_a_worker_is_not_offered_groups_of_names_it_cannot_run(driver: Driver) -> None:
    if Capability.FETCH_BY_NAME not in driver.capabilities:
        pytest.skip("only backends that fetch by name pass over unknown names")
    await put(driver, grouped("x0", "other.job:k", name="other.job"), grouped("m0", "k:m"))
    params = FetchParams((QUEUE,), 10, "worker-1", LEASE, names=("test.job",))
    assert ids(await driver.job_fetch(params, now=T0)) == ["m0"]
    assert (await get(driver, "x0")).state is JobState.QUEUED


async def test_a_cron_tick_of_a_grouped_job_joins_its_group(driver: Driver) -> None:
    from conveyor.drivers.common import cron_job_id
    from conveyor.drivers.records import CronFire, CronSchedule

    await driver.cron_register([CronSchedule("tick", QUEUE, "test.job", "* * * * *")], now=T0)
    tick = int(T0) // 60 * 60
    job = grouped(cron_job_id("tick", tick), "k:cron", concurrency=1, run_at=float(tick))
    await driver.cron_fire(CronFire("tick", tick, job), now=T0)
    await put(driver, grouped("c1", "k:cron", concurrency=1))
    assert len(await fetch(driver, now=T0 + 1, limit=5)) == 1
    assert (await get(driver, job.id)).group == "k:cron"


async def test_a_bad_group_is_refused_and_nothing_is_written(driver: Driver) -> None:
    bad = [
        JobGroup(""),
        JobGroup("k", concurrency=-1),
        JobGroup("k", concurrency=10_001),
        JobGroup("k", rate_count=5),
        JobGroup("k", rate_count=1_001, rate_per=1.0),
        JobGroup("k", rate_count=1, rate_per=-1.0),
        JobGroup("k\x00"),
    ]
    for group in bad:
        job = dataclasses.replace(new_job("bad"), group=group)
        with pytest.raises(InvalidArgument, match="group"):
            await driver.job_insert_many([new_job("fine"), job], now=T0)
        assert not await exists(driver, "fine")


async def test_finishing_a_job_of_a_full_group_wakes_listeners(driver: Driver) -> None:
    await put(driver, grouped("a0", "k:a", concurrency=1), grouped("a1", "k:a", concurrency=1))
    [job] = await fetch(driver, limit=5)
    await driver.listen((QUEUE,), 0.0)  # consume the insert's notification
    task = asyncio.create_task(driver.listen((QUEUE,), 10.0))
    await asyncio.sleep(0)
    started = time.monotonic()
    await finish(driver, job)
    await asyncio.wait_for(task, timeout=10.0)
    assert time.monotonic() - started < 5.0


async def test_idle_groups_are_pruned_and_come_back_with_their_next_job(driver: Driver) -> None:
    await put(driver, grouped("a0", "k:a", concurrency=1, rate=(1, 5.0)))
    [job] = await fetch(driver)
    await finish(driver, job, now=T0 + 1)
    await driver.job_prune_finished(Retention(completed_max_count=0), limit=100, now=T0 + 100)
    await put(driver, grouped("a1", "k:a", concurrency=1, rate=(1, 5.0)), now=T0 + 101)
    assert ids(await fetch(driver, now=T0 + 101)) == ["a1"]
    await put(driver, grouped("a2", "k:a", concurrency=1, rate=(1, 5.0)), now=T0 + 102)
    assert await fetch(driver, now=T0 + 200) == []  # a1 is still active: one at a time


async def test_groups_take_turns_across_fetches(driver: Driver) -> None:
    # The group that waited longer has the larger key: neither key order nor a turn that never
    # moves would alternate.
    await put(driver, *(grouped(f"b{i}", "k:b") for i in range(6)), now=T0)
    await put(driver, *(grouped(f"a{i}", "k:a") for i in range(6)), now=T0 + 1)
    served = [(await fetch(driver, now=T0 + 2 + step, limit=1))[0].group for step in range(6)]
    assert served == ["k:b", "k:a"] * 3


async def test_a_rate_held_group_takes_its_turn_when_its_window_frees(driver: Driver) -> None:
    await put(driver, *(grouped(f"a{i}", "k:a", rate=(1, 10.0)) for i in range(3)), now=T0)
    await put(driver, *(grouped(f"b{i}", "k:b") for i in range(20)), now=T0 + 1)
    first = await fetch(driver, now=T0 + 2, limit=2)
    assert [j.group for j in first] == ["k:a", "k:b"]
    for step in range(3, 12):
        assert [j.group for j in await fetch(driver, now=T0 + step, limit=1)] == ["k:b"]
    # Its window frees at T0 + 12, and that is its turn: after b's (served at T0 + 11), so b
    # goes first at T0 + 12.5, then a, in the same round.
    both = await fetch(driver, now=T0 + 12.5, limit=2)
    assert Counter(j.group for j in both) == {"k:a": 1, "k:b": 1}
    assert [j.group for j in await fetch(driver, now=T0 + 13, limit=1)] == ["k:b"]


async def test_pruning_keeps_a_group_whose_rate_window_still_holds(driver: Driver) -> None:
    await put(driver, grouped("a0", "k:a", rate=(1, 100.0)))
    [job] = await fetch(driver)
    await finish(driver, job, now=T0 + 1)
    await driver.job_prune_finished(Retention(completed_max_count=0), limit=100, now=T0 + 10)
    await put(driver, grouped("a1", "k:a", rate=(1, 100.0)), now=T0 + 11)
    assert await fetch(driver, now=T0 + 12) == []
    assert await driver.group_wait([QUEUE], now=T0 + 12) == pytest.approx(88.0, abs=1e-3)
    assert ids(await fetch(driver, now=T0 + 100)) == ["a1"]


async def test_pruning_keeps_the_block_of_a_group_without_jobs(driver: Driver) -> None:
    await driver.group_block(QUEUE, "k:n", 50.0, now=T0)
    await driver.job_prune_finished(Retention(), limit=100, now=T0 + 1)
    await put(driver, grouped("n0", "k:n"), now=T0 + 2)
    assert await fetch(driver, now=T0 + 3) == []
    assert ids(await fetch(driver, now=T0 + 50)) == ["n0"]


async def test_a_full_group_never_costs_a_plain_job_its_place(driver: Driver) -> None:
    await put(driver, grouped("a0", "k:a", concurrency=1), grouped("a1", "k:a", concurrency=1))
    await put(driver, *(new_job(f"p{i:02d}") for i in range(30)))
    first = await fetch(driver, limit=5)
    assert Counter(j.group for j in first) == {"k:a": 1, None: 4}
    for step in range(20):  # the group is full: every fetch of one leases a plain job
        got = await fetch(driver, now=T0 + 1 + step, limit=1)
        assert len(got) == 1 and got[0].group is None


async def test_group_wait_looks_only_at_the_names_given(driver: Driver) -> None:
    await put(driver, grouped("x0", "other.job:k", name="other.job"))
    await driver.group_block(QUEUE, "other.job:k", 5.0, now=T0)
    assert await driver.group_wait([QUEUE], names=["test.job"], now=T0) is None
    assert await driver.group_wait([QUEUE], names=["other.job"], now=T0) == pytest.approx(
        5.0, abs=1e-3
    )


async def test_a_queue_rate_limit_is_shared_by_grouped_and_plain_jobs(driver: Driver) -> None:
    await put(driver, *(grouped(f"g{i:03d}", f"k:{i % 5}") for i in range(100)))
    await put(driver, *(new_job(f"p{i:02d}") for i in range(20)))
    limits = (RateLimit(QUEUE, 2, 1.0),)
    kinds = Counter[bool]()
    for step in range(20):
        params = FetchParams((QUEUE,), 8, "worker-1", LEASE, rate_limits=limits)
        for job in await driver.job_fetch(params, now=T0 + step):
            kinds[job.group is None] += 1
    assert kinds[True] >= 10 and kinds[False] >= 10, kinds


async def test_a_debounced_job_moves_to_the_group_of_its_new_payload(driver: Driver) -> None:
    from conveyor.drivers.records import Dedup, DedupMode, InsertStatus

    def debounced(key: str, payload: bytes) -> NewJob:
        job = grouped("deb", key, concurrency=1, payload=payload, delay=10.0)
        return dataclasses.replace(job, dedup=Dedup(DedupMode.DEBOUNCE, "d"))

    await put(driver, debounced("k:one", b'{"k": 1}'))
    [replaced] = await driver.job_insert_many([debounced("k:two", b'{"k": 2}')], now=T0 + 1)
    assert replaced.status is InsertStatus.REPLACED
    assert (await get(driver, "deb")).group == "k:two"
    # Serial per key: it waits behind the running job of its new group, not of its old one.
    await put(driver, grouped("two-0", "k:two", concurrency=1), now=T0 + 2)
    [running] = await fetch(driver, now=T0 + 3)
    assert running.id == "two-0"
    await put(driver, grouped("one-0", "k:one", concurrency=1), now=T0 + 4)
    assert ids(await fetch(driver, now=T0 + 20)) == ["one-0"]
    await finish(driver, running, now=T0 + 21)
    assert ids(await fetch(driver, now=T0 + 22)) == ["deb"]
