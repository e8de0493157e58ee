"""What headers, deleting finished jobs and the throughput counters leave in Redis: a job
without headers has no field for them; a deleted job leaves no trace in any key; a queue's
counters are one hash in its slot that each add prunes by the minutes elapsed (or by its size,
after a long pause) and that expires, counted from the ``now`` the caller passed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from conveyor.backends.redis import RedisDriver
from conveyor.backends.redis._keys import ACTIVE_SENTINEL
from conveyor.core.headers import encode_headers
from conveyor.drivers.common import STATS_KEEP_MINUTES
from conveyor.drivers.records import (
    ChangeStatus,
    Dedup,
    DedupMode,
    FetchParams,
    FinishJob,
    NewJob,
    QueueStats,
    Retention,
    TransitionKind,
)
from tests.backends.redis.consistency import problems
from tests.backends.redis.snapshot import snapshot

T0 = 1_700_000_000.0
M0 = int(T0 // 60)
KEEP = STATS_KEEP_MINUTES
HEADERS = encode_headers({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})


@pytest.fixture
def raw(redis_base_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_base_url) as client:
        yield client


def prefix_of(d: RedisDriver) -> str:
    return d.source_url.rsplit("prefix=", 1)[1]


async def test_headers_are_one_field_present_only_when_given(
    redis_driver: RedisDriver, raw: redis.Redis
) -> None:
    jobs = [NewJob("h", "q", "n", b"{}", headers=HEADERS), NewJob("plain", "q", "n", b"{}")]
    await redis_driver.job_insert_many(jobs, now=T0)
    keys = redis_driver._store.keys("q")
    assert raw.hget(keys.job("h"), "hd") == (HEADERS or "").encode()
    assert raw.hexists(keys.job("plain"), "hd") is False


async def test_a_debounce_replacement_without_headers_removes_them(
    redis_driver: RedisDriver, raw: redis.Redis
) -> None:
    dedup = Dedup(DedupMode.DEBOUNCE, "k")
    first = NewJob("d1", "q", "n", b"{}", delay=10, dedup=dedup, headers=HEADERS)
    second = NewJob("d2", "q", "n", b"{}", delay=10, dedup=dedup)
    await redis_driver.job_insert_many([first], now=T0)
    [result] = await redis_driver.job_insert_many([second], now=T0 + 1)
    assert result.id == "d1"
    assert raw.hexists(redis_driver._store.keys("q").job("d1"), "hd") is False
    [record] = await redis_driver.job_get_many(["d1"])
    assert record is not None and record.headers is None
    assert problems(redis_driver.source_url) == []


async def test_a_deleted_job_leaves_nothing_behind(
    redis_driver: RedisDriver, raw: redis.Redis
) -> None:
    await redis_driver.job_insert_many([NewJob("seed", "q", "n", b"{}")], now=T0)
    before = snapshot(raw, prefix_of(redis_driver))
    jobs = [
        NewJob("a", "q", "n", b"{}", dedup=Dedup(DedupMode.UNTIL_FINISHED, "ka"), headers=HEADERS),
        NewJob(
            "b", "q", "n", b"{}", keep_completed=3600.0, dedup=Dedup(DedupMode.THROTTLE, "kb", 60)
        ),
        NewJob("c", "q", "n", b"{}", keep_failed=3600.0),
    ]
    await redis_driver.job_insert_many(jobs, now=T0)
    leased = await redis_driver.job_fetch(FetchParams(("q",), 4, "w", 30.0), now=T0)
    kinds = {"seed": TransitionKind.COMPLETE, "a": TransitionKind.FAIL}
    finishes = [
        FinishJob(j.id, j.lease_token or "", kinds.get(j.id, TransitionKind.COMPLETE), error="x")
        for j in leased
        if j.id != "c"
    ]
    await redis_driver.job_finish_many(finishes, retention=Retention(), now=T0 + 1)
    [c] = [j for j in leased if j.id == "c"]
    fail = FinishJob("c", c.lease_token or "", TransitionKind.FAIL, error="boom")
    await redis_driver.job_finish_many([fail], retention=Retention(), now=T0 + 1)
    results = await redis_driver.job_delete_many(["a", "b", "c", "seed"])
    assert [r.status for r in results] == [ChangeStatus.OK] * 4
    # What is left is what the seed job had left, less the job itself and the ready list: the
    # queue's registration and meta hash (and the fetch's receipt, which expires on its own),
    # and the active set's sentinel, which keeps that set a skiplist for the queue's life.
    keys = redis_driver._store.keys("q")
    after = {k for k in snapshot(raw, prefix_of(redis_driver)) if b":receipt:" not in k}
    assert raw.zrange(keys.active, 0, -1) == [ACTIVE_SENTINEL]
    after.discard(keys.active.encode())
    assert after <= set(before) - {keys.job("seed").encode(), keys.ready.encode()}
    assert problems(redis_driver.source_url) == []


async def test_a_key_that_is_no_job_hash_is_not_found_and_left_alone(
    redis_driver: RedisDriver, raw: redis.Redis
) -> None:
    await redis_driver.job_insert_many([NewJob("seed", "q", "n", b"{}")], now=T0)
    raw.set(redis_driver._store.keys("q").job("odd"), "foreign")
    [result] = await redis_driver.job_delete_many(["odd"])
    assert result.status is ChangeStatus.NOT_FOUND
    assert raw.get(redis_driver._store.keys("q").job("odd")) == b"foreign"


async def test_counters_live_in_the_queue_slot_and_expire_from_the_given_now(
    redis_driver: RedisDriver, raw: redis.Redis
) -> None:
    await redis_driver.stats_add([QueueStats("q", M0, completed=2)], now=T0)
    key = redis_driver._store.keys("q").stats
    assert key.startswith(redis_driver._store.keys("q").tag)
    # Kept until its bucket is too old, counted from T0 (years ago): not expired at once.
    expected = (M0 + KEEP + 1) * 60 - T0
    assert expected - 5 <= raw.pttl(key) / 1000 <= expected
    # A later bucket pushes the expiry out; an earlier one never pulls it in.
    await redis_driver.stats_add([QueueStats("q", M0 + 10, completed=1)], now=T0 + 1)
    assert raw.pttl(key) / 1000 > expected + 500
    await redis_driver.stats_add([QueueStats("q", M0 + 1, completed=1)], now=T0 + 1)
    assert raw.pttl(key) / 1000 > expected + 500


async def test_each_add_prunes_the_minutes_elapsed(
    redis_driver: RedisDriver, raw: redis.Redis
) -> None:
    key = redis_driver._store.keys("q").stats
    for n in range(KEEP + 30):
        at = T0 + 60 * n
        await redis_driver.stats_add([QueueStats("q", M0 + n, completed=1, failed=1)], now=at)
    fields = {f.decode() for f in raw.hkeys(key)}
    minutes = {int(f.split(":")[0]) for f in fields if f != "pruned"}
    last = M0 + KEEP + 29
    assert minutes == set(range(last - KEEP, last + 1))
    assert raw.hget(key, "pruned") == str(last - KEEP).encode()
    read = await redis_driver.stats_read(["q"], since_minute=0)
    assert len(read) == KEEP  # at most KEEP buckets, however many the hash holds
    assert read[0] == QueueStats("q", last - KEEP, completed=1, failed=1)


async def test_a_long_pause_prunes_by_the_hash_size(
    redis_driver: RedisDriver, raw: redis.Redis
) -> None:
    key = redis_driver._store.keys("q").stats
    await redis_driver.stats_add([QueueStats("q", M0 + n, retried=1) for n in range(5)], now=T0)
    years = 3 * 365 * 24 * 3600
    later = QueueStats("q", int((T0 + years) // 60), completed=1)
    raw.config_resetstat()
    await redis_driver.stats_add([later], now=T0 + years)
    # A million minutes passed: the few fields held were read, not the minutes tried.
    hdel = raw.info("commandstats").get("cmdstat_hdel", {"calls": 0})
    assert hdel["calls"] <= 1
    assert await redis_driver.stats_read(["q"], since_minute=0) == [later]
    assert raw.hlen(key) == 2  # the bucket and the marker


async def test_an_add_of_only_old_samples_writes_nothing(
    redis_driver: RedisDriver, raw: redis.Redis
) -> None:
    await redis_driver.stats_add([QueueStats("q", M0 - KEEP - 1, completed=1)], now=T0)
    assert not raw.exists(redis_driver._store.keys("q").stats)
    assert await redis_driver.stats_read(None, since_minute=0) == []


async def test_a_minute_far_ahead_is_kept_without_overflowing_the_expiry(
    redis_driver: RedisDriver, raw: redis.Redis
) -> None:
    far = QueueStats("q", 2**53 - 1, completed=2**53 - 1)
    await redis_driver.stats_add([far], now=T0)
    assert await redis_driver.stats_read(["q"], since_minute=M0) == [far]
    assert 0 < raw.pttl(redis_driver._store.keys("q").stats) <= 3153600000 * 1000


async def test_zero_counts_make_a_bucket(redis_driver: RedisDriver) -> None:
    await redis_driver.stats_add([QueueStats("q", M0)], now=T0)
    assert await redis_driver.stats_read(None, since_minute=0) == [QueueStats("q", M0)]


async def test_a_bucket_for_another_queue_is_its_own_key(redis_driver: RedisDriver) -> None:
    samples = [QueueStats("a", M0, completed=1), QueueStats("b", M0, retried=2)]
    await redis_driver.stats_add(samples, now=T0)
    other = redis_driver.connect_another()  # a reader that never added: finds both by the set
    await other.open()
    try:
        assert await other.stats_read(None, since_minute=M0) == samples
    finally:
        await other.close()
