"""Where a schedule lives on Redis: its hash in the slot of its jobs' queue (so one script
records a tick and inserts its job), its name in the shared index for listing."""

from __future__ import annotations

from redis.crc import key_slot

from conveyor.backends.redis import RedisDriver
from conveyor.backends.redis._keys import Namespace, QueueKeys
from conveyor.drivers.common import cron_job_id
from conveyor.drivers.records import CronFire, CronFireStatus, CronSchedule, NewJob
from tests.conftest import redis_test_url

TICK = 1_800_000_000


def test_a_schedules_hash_shares_its_queues_slot() -> None:
    keys = QueueKeys("conveyor", "reports")
    cron = keys.cron("nightly")
    assert cron.startswith("{conveyor:reports}:")
    assert key_slot(cron.encode()) == key_slot(keys.jobs.encode()) == key_slot(keys.meta.encode())
    assert Namespace("conveyor").crons.startswith("{conveyor}:")


async def test_fire_and_list_across_queues_on_a_cluster(redis_cluster_url: str) -> None:
    driver = RedisDriver(redis_test_url(redis_cluster_url))
    await driver.open()
    try:
        queues = [f"q{n}" for n in range(6)]  # spread over the cluster's nodes
        schedules = [CronSchedule(f"s-{q}", q, "job", "@every 60s") for q in queues]
        assert await driver.cron_register(schedules) == {s.name: None for s in schedules}
        for q in queues:
            job = NewJob(cron_job_id(f"s-{q}", TICK), q, "job", b"{}")
            fired = await driver.cron_fire(CronFire(f"s-{q}", TICK, job), now=TICK)
            assert fired.status is CronFireStatus.FIRED
        infos = await driver.cron_list()
        assert [(i.schedule.name, i.last_tick) for i in infos] == [(f"s-{q}", TICK) for q in queues]
        found = await driver.job_get_many([cron_job_id(f"s-{q}", TICK) for q in queues])
        assert [j.queue if j else None for j in found] == queues
    finally:
        await driver.close()
