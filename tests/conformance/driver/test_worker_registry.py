"""worker_heartbeat, worker_list and worker_deregister."""

from __future__ import annotations

import dataclasses

from conveyor.drivers.protocol import Driver
from conveyor.drivers.records import WorkerInfo

from ._support import T0


def _info(worker_id: str, started_at: float = T0, **fields: object) -> WorkerInfo:
    return WorkerInfo(
        id=worker_id,
        hostname="host-1",
        pid=4242,
        queues=("default", "mail"),
        concurrency=5,
        started_at=started_at,
        **fields,  # type: ignore[arg-type]
    )


async def test_heartbeat_registers_the_worker_until_its_ttl_expires(driver: Driver) -> None:
    await driver.worker_heartbeat(_info("w1", running=2, processed=10), ttl=30, now=T0 + 5)
    [listed] = await driver.worker_list(now=T0 + 34.9)
    assert listed == _info("w1", running=2, processed=10, last_seen_at=T0 + 5)
    assert await driver.worker_list(now=T0 + 35) == []


async def test_a_new_heartbeat_refreshes_expiry_and_fields(driver: Driver) -> None:
    await driver.worker_heartbeat(_info("w1"), ttl=30, now=T0)
    await driver.worker_heartbeat(_info("w1", running=4, processed=99), ttl=30, now=T0 + 20)
    [listed] = await driver.worker_list(now=T0 + 40)
    assert (listed.running, listed.processed, listed.last_seen_at) == (4, 99, T0 + 20)


async def test_workers_are_listed_by_start_time(driver: Driver) -> None:
    await driver.worker_heartbeat(_info("late", started_at=T0 + 2), ttl=30, now=T0 + 2)
    await driver.worker_heartbeat(_info("early", started_at=T0), ttl=30, now=T0 + 2)
    await driver.worker_heartbeat(_info("dead", started_at=T0 - 100), ttl=1, now=T0 - 100)
    assert [w.id for w in await driver.worker_list(now=T0 + 3)] == ["early", "late"]


async def test_deregister_removes_the_worker(driver: Driver) -> None:
    await driver.worker_heartbeat(_info("w1"), ttl=30, now=T0)
    await driver.worker_heartbeat(_info("w2"), ttl=30, now=T0)
    await driver.worker_deregister("w1")
    await driver.worker_deregister("never-registered")
    listed = await driver.worker_list(now=T0)
    assert listed == [dataclasses.replace(_info("w2"), last_seen_at=T0)]


async def test_expired_registrations_are_removed_not_only_hidden(driver: Driver) -> None:
    """A heartbeat prunes registrations that expired, so the registry cannot grow with every
    worker that ever ran."""
    await driver.worker_heartbeat(_info("gone"), ttl=1, now=T0)
    await driver.worker_heartbeat(_info("live"), ttl=30, now=T0 + 10)
    # Listed as of a moment when "gone" would still count, had it been kept.
    assert [w.id for w in await driver.worker_list(now=T0 + 0.5)] == ["live"]


async def test_a_heartbeat_carries_the_names_the_worker_serves(driver: Driver) -> None:
    names = ("email.send", "report.build")
    await driver.worker_heartbeat(_info("w1", names=names), ttl=30, now=T0)
    [listed] = await driver.worker_list(now=T0 + 1)
    assert listed.names == names
