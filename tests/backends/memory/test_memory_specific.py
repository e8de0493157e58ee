"""Memory-only behaviour: what the reference driver must get right about its own lock."""

from __future__ import annotations

import threading
from types import TracebackType

import pytest

from conveyor.backends.memory.driver import MemoryDriver, MemoryStore
from conveyor.core.rescue import decide_rescue
from conveyor.drivers.records import FetchParams, FinishJob, NewJob, Retention, TransitionKind

T0 = 1_700_000_000.0


class PurgeOnRelease:
    """Stands in for the store's lock; once armed, another connection deletes every job the
    moment the driver next releases the lock (what a concurrent purge may do)."""

    def __init__(self, store: MemoryStore) -> None:
        self._inner: threading.RLock = store.lock
        self._store = store
        self.armed = False

    def __enter__(self) -> bool:
        return self._inner.__enter__()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._inner.__exit__(exc_type, exc, tb)
        if self.armed:
            self.armed = False
            with self._inner:
                self._store.jobs.clear()


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> tuple[MemoryStore, PurgeOnRelease]:
    store = MemoryStore()
    lock = PurgeOnRelease(store)
    monkeypatch.setattr(store, "lock", lock)
    return store, lock


async def test_rescue_decides_what_to_wake_under_the_lock(
    store: tuple[MemoryStore, PurgeOnRelease],
) -> None:
    memory, lock = store
    driver = MemoryDriver("memory://", memory)
    await driver.job_insert_many([NewJob("a", "q", "n", b"{}")], now=T0)
    await driver.job_fetch(FetchParams(("q",), 1, "w", 10.0), now=T0)
    [expired] = await driver.job_expired(limit=10, now=T0 + 10)
    lock.armed = True
    [result] = await driver.job_rescue_many([decide_rescue(expired, 3)], now=T0 + 10)
    assert result.status == "ok"
    assert memory.jobs == {}


async def test_retry_decides_what_to_wake_under_the_lock(
    store: tuple[MemoryStore, PurgeOnRelease],
) -> None:
    memory, lock = store
    driver = MemoryDriver("memory://", memory)
    await driver.job_insert_many([NewJob("a", "q", "n", b"{}")], now=T0)
    [job] = await driver.job_fetch(FetchParams(("q",), 1, "w", 10.0), now=T0)
    assert job.lease_token is not None
    finish = FinishJob("a", job.lease_token, TransitionKind.FAIL, error="boom")
    await driver.job_finish_many([finish], retention=Retention(), now=T0)
    lock.armed = True
    [result] = await driver.job_retry_many(["a"], now=T0 + 1)
    assert result.status == "ok"
    assert memory.jobs == {}
