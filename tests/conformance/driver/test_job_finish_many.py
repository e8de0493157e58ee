"""job_finish_many: every transition kind, fencing by lease token, repeated finishes, the
history of errors, input checks before any write, and count retention."""

from __future__ import annotations

import pytest

from conveyor._errors import InvalidArgument
from conveyor.drivers.common import HISTORY_LIMIT
from conveyor.drivers.protocol import Driver
from conveyor.drivers.records import (
    FinishJob,
    JobState,
    Retention,
    TransitionKind,
    TransitionResult,
    TransitionStatus,
)

from ._support import LEASE, T0, exists, fetch, fetch_one, finish, get, insert, rescue

OK = TransitionStatus.OK
LOST = TransitionStatus.LEASE_LOST


async def test_complete_stores_the_result_and_releases_the_lease(driver: Driver) -> None:
    await insert(driver, "a", now=T0)
    job = await fetch_one(driver)
    assert (await finish(driver, job, result=b'"sent"', now=T0 + 3)).status is OK
    done = await get(driver, "a")
    assert (done.state, done.result, done.finished_at) == (JobState.COMPLETED, b'"sent"', T0 + 3)
    assert (done.attempt, done.lease_expires_at, done.worker_id) == (1, None, None)


async def test_retry_waits_for_its_delay_on_the_backend_clock(driver: Driver) -> None:
    await insert(driver, "a", now=T0)
    job = await fetch_one(driver)
    result = await finish(driver, job, TransitionKind.RETRY, delay=30, error="timeout", now=T0 + 2)
    assert result.status is OK
    waiting = await get(driver, "a")
    assert (waiting.state, waiting.run_at, waiting.error) == (JobState.RETRYING, T0 + 32, "timeout")
    assert waiting.attempt == 1 and waiting.lease_expires_at is None and waiting.finished_at is None
    assert await fetch(driver, now=T0 + 31) == []
    assert (await fetch_one(driver, now=T0 + 32)).attempt == 2


async def test_snooze_reschedules_and_gives_the_attempt_back(driver: Driver) -> None:
    await insert(driver, "a", now=T0)
    job = await fetch_one(driver)
    assert (await finish(driver, job, TransitionKind.SNOOZE, delay=60)).status is OK
    snoozed = await get(driver, "a")
    assert (snoozed.state, snoozed.run_at, snoozed.attempt) == (JobState.SCHEDULED, T0 + 60, 0)
    assert await fetch(driver, now=T0 + 59) == []
    assert (await fetch_one(driver, now=T0 + 60)).attempt == 1


async def test_fail_and_cancel_are_terminal_with_their_error(driver: Driver) -> None:
    await insert(driver, "f", "c", now=T0)
    f, c = await fetch(driver)
    assert (
        await finish(driver, f, TransitionKind.FAIL, error="bad input", now=T0 + 1)
    ).status is OK
    assert (await finish(driver, c, TransitionKind.CANCEL, error="stop")).status is OK
    failed, cancelled = await get(driver, "f"), await get(driver, "c")
    assert (failed.state, failed.error, failed.finished_at) == (
        JobState.FAILED,
        "bad input",
        T0 + 1,
    )
    assert (cancelled.state, cancelled.error) == (JobState.CANCELLED, "stop")
    assert failed.attempt == 1 and failed.lease_expires_at is None
    assert await fetch(driver, now=T0 + 1000) == []


async def test_requeue_makes_the_job_runnable_now_without_using_an_attempt(driver: Driver) -> None:
    await insert(driver, "a", now=T0)
    job = await fetch_one(driver)
    assert (await finish(driver, job, TransitionKind.REQUEUE)).status is OK
    requeued = await get(driver, "a")
    assert (requeued.state, requeued.attempt, requeued.worker_id) == (JobState.QUEUED, 0, None)
    assert (await fetch_one(driver)).attempt == 1


async def test_stale_token_cannot_complete_or_fail_and_changes_nothing(driver: Driver) -> None:
    await insert(driver, "a", now=T0)
    job = await fetch_one(driver)
    for kind in TransitionKind:
        result = await finish(driver, job, kind, token="stale", delay=1, error="x")
        assert result.status is LOST, kind
    assert await get(driver, "a") == job


async def test_old_token_is_fenced_off_after_rescue_and_refetch(driver: Driver) -> None:
    await insert(driver, "a", now=T0)
    old = await fetch_one(driver)
    await rescue(driver, now=T0 + LEASE)
    new = await fetch_one(driver, now=T0 + LEASE + 1, worker_id="worker-2")
    assert (await finish(driver, old, result=b"late")).status is LOST
    assert (await finish(driver, old, TransitionKind.FAIL, error="late")).status is LOST
    assert await get(driver, "a") == new
    assert (await finish(driver, new, result=b"fresh")).status is OK
    assert (await get(driver, "a")).result == b"fresh"


@pytest.mark.parametrize("kind", list(TransitionKind))
async def test_a_finish_sent_again_reports_ok_and_changes_nothing(
    driver: Driver, kind: TransitionKind
) -> None:
    """A finish whose reply was lost is sent again by the caller: its work is already done,
    so it reports ok (not "another worker owns the job"), and nothing is applied twice."""
    await insert(driver, "a", now=T0)
    job = await fetch_one(driver)
    first = await finish(driver, job, kind, delay=5, error="e", result=b"1", now=T0 + 1)
    after = await get(driver, "a")
    again = await finish(driver, job, kind, delay=5, error="e", result=b"1", now=T0 + 2)
    assert (first.status, again.status) == (OK, OK)
    assert await get(driver, "a") == after


async def test_a_finish_of_a_refetched_job_with_the_old_token_is_lost(driver: Driver) -> None:
    await insert(driver, "a", now=T0)
    job = await fetch_one(driver)
    assert (await finish(driver, job, TransitionKind.REQUEUE)).status is OK
    again = await fetch_one(driver)
    assert (await finish(driver, job, TransitionKind.FAIL, error="x")).status is LOST
    assert await get(driver, "a") == again


async def test_errors_join_the_history_and_completing_clears_the_last_one(driver: Driver) -> None:
    await insert(driver, "a", now=T0)
    job = await fetch_one(driver, now=T0)
    await finish(driver, job, TransitionKind.RETRY, delay=1, error="first", now=T0 + 1)
    job = await fetch_one(driver, now=T0 + 2)
    await finish(driver, job, TransitionKind.RETRY, delay=1, error="second", now=T0 + 3)
    job = await fetch_one(driver, now=T0 + 4)
    assert job.error == "second"
    await finish(driver, job, result=b"ok", now=T0 + 5)
    done = await get(driver, "a")
    assert done.error is None
    assert [(e.attempt, e.at, e.error) for e in done.errors] == [
        (1, T0 + 1, "first"),
        (2, T0 + 3, "second"),
    ]


async def test_the_history_keeps_the_last_entries(driver: Driver) -> None:
    await insert(driver, "a", now=T0, max_attempts=1000)
    now = T0
    for n in range(HISTORY_LIMIT + 3):
        job = await fetch_one(driver, now=now)
        await finish(driver, job, TransitionKind.RETRY, error=f"e{n}", now=now)
        now += 1
    history = (await get(driver, "a")).errors
    assert len(history) == HISTORY_LIMIT
    assert [e.error for e in history] == [f"e{n}" for n in range(3, HISTORY_LIMIT + 3)]


async def test_unknown_job_is_not_found(driver: Driver) -> None:
    results = await driver.job_finish_many(
        [FinishJob("ghost", "t", TransitionKind.COMPLETE)], retention=Retention(), now=T0
    )
    assert results == [TransitionResult("ghost", TransitionStatus.NOT_FOUND)]


async def test_batch_results_follow_input_order(driver: Driver) -> None:
    await insert(driver, "a", "b", "c", now=T0)
    a, b, c = await fetch(driver)
    assert a.lease_token and b.lease_token and c.lease_token
    results = await driver.job_finish_many(
        [
            FinishJob("c", c.lease_token, TransitionKind.RETRY, delay=5, error="e"),
            FinishJob("ghost", "t", TransitionKind.COMPLETE),
            FinishJob("a", a.lease_token, TransitionKind.COMPLETE, result=b"1"),
            FinishJob("b", "wrong", TransitionKind.COMPLETE),
            FinishJob("a", a.lease_token, TransitionKind.COMPLETE, result=b"2"),
        ],
        retention=Retention(),
        now=T0 + 1,
    )
    assert [(r.job_id, r.status) for r in results] == [
        ("c", OK),
        ("ghost", TransitionStatus.NOT_FOUND),
        ("a", OK),
        ("b", LOST),
        ("a", OK),  # the same finish again: already applied, not applied twice
    ]
    assert (await get(driver, "a")).result == b"1"


async def test_completing_trims_the_queue_to_completed_max_count(driver: Driver) -> None:
    await insert(driver, "j1", "j2", "j3", "j4", now=T0)
    await insert(driver, "other", queue="other", now=T0)
    jobs = await fetch(driver, queues=("default", "other"))
    keep_two = Retention(completed_max_count=2)
    for n, job in enumerate(jobs):
        assert (await finish(driver, job, now=T0 + n, retention=keep_two)).status is OK
    remaining = {j for j in ("j1", "j2", "j3", "j4", "other") if await exists(driver, j)}
    assert remaining == {"j3", "j4", "other"}


async def test_completed_max_count_none_keeps_everything(driver: Driver) -> None:
    await insert(driver, "a", "b", "c", now=T0)
    keep_all = Retention(completed_max_count=None)
    for job in await fetch(driver):
        await finish(driver, job, retention=keep_all)
    counts = await driver.job_count_by_state()
    assert counts[JobState.COMPLETED] == 3


async def test_a_completion_sent_again_trims_nothing(driver: Driver) -> None:
    """Trimming follows completions written now: a completion sent again (its reply lost)
    wrote nothing, so it trims nothing, whatever retention it carries."""
    await insert(driver, "a", now=T0)
    job = await fetch_one(driver)
    assert (await finish(driver, job, now=T0 + 1)).status is OK
    again = await finish(driver, job, now=T0 + 1, retention=Retention(completed_max_count=0))
    assert again.status is OK
    assert (await get(driver, "a")).state is JobState.COMPLETED


async def test_count_retention_does_not_touch_failed_jobs(driver: Driver) -> None:
    await insert(driver, "f", "a", "b", now=T0)
    f, a, b = await fetch(driver)
    await finish(driver, f, TransitionKind.FAIL, error="x")
    keep_zero = Retention(completed_max_count=0)
    await finish(driver, a, retention=keep_zero, now=T0 + 1)
    await finish(driver, b, retention=keep_zero, now=T0 + 2)
    assert [await exists(driver, i) for i in ("f", "a", "b")] == [True, False, False]


BAD_FINISHES = {
    "nan delay": {"kind": TransitionKind.RETRY, "delay": float("nan")},
    "infinite delay": {"kind": TransitionKind.SNOOZE, "delay": float("inf")},
    "negative delay": {"kind": TransitionKind.RETRY, "delay": -1.0},
    "a delay over a century": {"kind": TransitionKind.RETRY, "delay": 1e12},
    "an error that is not UTF-8": {
        "kind": TransitionKind.FAIL,
        "error": b"caf\xe9".decode("utf-8", "surrogateescape"),
    },
}


@pytest.mark.parametrize("bad", BAD_FINISHES.values(), ids=BAD_FINISHES.keys())
async def test_invalid_finish_rejects_the_whole_batch_before_writing(
    driver: Driver, bad: dict[str, object]
) -> None:
    await insert(driver, "a", "b", now=T0)
    a, b = await fetch(driver)
    assert a.lease_token and b.lease_token
    batch = [
        FinishJob("a", a.lease_token, TransitionKind.COMPLETE, result=b"1"),
        FinishJob("b", b.lease_token, **bad),  # type: ignore[arg-type]
    ]
    with pytest.raises(InvalidArgument, match="'b'"):
        await driver.job_finish_many(batch, retention=Retention(), now=T0 + 1)
    assert [await get(driver, "a"), await get(driver, "b")] == [a, b]
