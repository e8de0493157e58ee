"""queue_list, queue_pause and queue_resume."""

from __future__ import annotations

from conveyor.drivers.protocol import Driver
from conveyor.drivers.records import JobState, PurgeParams, TransitionKind

from ._support import T0, fetch, finish, insert


async def test_queue_list_is_sorted_with_counts_and_pause_flags(driver: Driver) -> None:
    assert await driver.queue_list() == []
    await insert(driver, "a", "b", queue="mail", now=T0)
    await insert(driver, "c", queue="billing", now=T0)
    [job] = await fetch(driver, queues=("mail",), limit=1)
    await finish(driver, job, TransitionKind.FAIL, error="x")
    await driver.queue_pause("mail")
    queues = await driver.queue_list()
    assert [(q.name, q.paused) for q in queues] == [("billing", False), ("mail", True)]
    assert queues[0].counts[JobState.QUEUED] == 1 and sum(queues[0].counts.values()) == 1
    mail = queues[1].counts
    assert (mail[JobState.QUEUED], mail[JobState.FAILED], mail[JobState.ACTIVE]) == (1, 1, 0)
    assert set(mail) == set(JobState)


async def test_pausing_an_unknown_queue_lists_it(driver: Driver) -> None:
    await driver.queue_pause("later")
    [info] = await driver.queue_list()
    assert (info.name, info.paused, sum(info.counts.values())) == ("later", True, 0)
    await driver.queue_resume("later")
    assert [(q.name, q.paused) for q in await driver.queue_list()] == [("later", False)]


async def test_pause_and_resume_are_idempotent(driver: Driver) -> None:
    await insert(driver, "a", now=T0)
    await driver.queue_pause("default")
    await driver.queue_pause("default")
    assert await fetch(driver) == []
    await driver.queue_resume("default")
    await driver.queue_resume("default")
    await driver.queue_resume("never-seen")
    assert [j.id for j in await fetch(driver)] == ["a"]
    assert [q.name for q in await driver.queue_list()] == ["default"]


async def test_a_queue_stays_listed_after_its_jobs_are_gone(driver: Driver) -> None:
    await insert(driver, "a", now=T0)
    await driver.job_purge(PurgeParams(states=(JobState.QUEUED,)), now=T0)
    [info] = await driver.queue_list()
    assert info.name == "default" and sum(info.counts.values()) == 0
