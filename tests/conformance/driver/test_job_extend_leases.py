"""job_extend_leases: batch renewal, lost leases and cancellation requests."""

from __future__ import annotations

from conveyor.drivers.protocol import Driver
from conveyor.drivers.records import ExtendResult, Lease, TransitionKind

from ._support import LEASE, T0, fetch, fetch_one, finish, get, insert, rescue


async def test_extending_moves_the_deadline_and_postpones_rescue(driver: Driver) -> None:
    await insert(driver, "a", now=T0)
    job = await fetch_one(driver)
    assert job.lease_token is not None
    result = await driver.job_extend_leases([Lease("a", job.lease_token)], 60, now=T0 + 20)
    assert result == ExtendResult((), ())
    assert (await get(driver, "a")).lease_expires_at == T0 + 80
    assert await driver.job_expired(limit=10, now=T0 + LEASE + 1) == []


async def test_stale_unknown_and_finished_leases_are_reported_lost(driver: Driver) -> None:
    await insert(driver, "live", "done", now=T0)
    live, done = await fetch(driver)
    assert live.lease_token is not None and done.lease_token is not None
    await finish(driver, done)
    result = await driver.job_extend_leases(
        [
            Lease("live", "not-the-token"),
            Lease("live", live.lease_token),
            Lease("ghost", "whatever"),
            Lease("done", done.lease_token),
        ],
        LEASE,
        now=T0 + 1,
    )
    assert result.lost == ("live", "ghost", "done")
    assert (await get(driver, "live")).lease_expires_at == T0 + 1 + LEASE


async def test_a_rescued_job_lease_is_lost_for_the_old_holder(driver: Driver) -> None:
    await insert(driver, "a", now=T0)
    old = await fetch_one(driver)
    assert old.lease_token is not None
    await rescue(driver, now=T0 + LEASE)
    new = await fetch_one(driver, now=T0 + LEASE)
    assert new.lease_token is not None
    result = await driver.job_extend_leases(
        [Lease("a", old.lease_token), Lease("a", new.lease_token)], LEASE, now=T0 + LEASE + 1
    )
    assert result.lost == ("a",)


async def test_cancel_requested_ids_are_reported_and_the_lease_still_extended(
    driver: Driver,
) -> None:
    await insert(driver, "a", "b", now=T0)
    a, b = await fetch(driver)
    assert a.lease_token is not None and b.lease_token is not None
    await driver.job_cancel_many(["b"], now=T0 + 1)
    result = await driver.job_extend_leases(
        [Lease("a", a.lease_token), Lease("b", b.lease_token)], LEASE, now=T0 + 2
    )
    assert result == ExtendResult((), ("b",))
    assert (await get(driver, "b")).lease_expires_at == T0 + 2 + LEASE
    assert (await finish(driver, b, TransitionKind.CANCEL, error="stopped")).status == "ok"


async def test_no_leases_is_a_no_op(driver: Driver) -> None:
    assert await driver.job_extend_leases([], LEASE, now=T0) == ExtendResult((), ())


async def test_an_isolated_lease_marks_the_job_until_its_next_fetch(driver: Driver) -> None:
    await insert(driver, "a", "b", now=T0)
    a, b = await fetch(driver)
    assert a.lease_token is not None and b.lease_token is not None
    result = await driver.job_extend_leases(
        [Lease("a", a.lease_token, isolated=True), Lease("b", b.lease_token)], LEASE, now=T0
    )
    assert result == ExtendResult((), ())
    assert [(await get(driver, i)).isolated for i in "ab"] == [True, False]
    # A plain renewal keeps the mark: it belongs to the attempt.
    await driver.job_extend_leases([Lease("a", a.lease_token)], LEASE, now=T0 + 1)
    assert (await get(driver, "a")).isolated
