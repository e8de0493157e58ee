"""Jobs leased ahead inside the runner: held while they wait, started in order as slots free,
dropped when their lease is lost, handed back when cancelled or when the worker stops."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel

from conveyor import JobContext, Rate, WorkerConfig, job
from conveyor.backends.memory import MemoryDriver
from conveyor.drivers.protocol import Capability
from conveyor.drivers.records import FinishJob, JobRecord, Retention, TransitionKind
from conveyor.runtime.completer import Completer, OnResult
from conveyor.runtime.executor import StopReason
from conveyor.runtime.lifecycle import WorkerStats
from conveyor.runtime.prefetch import PrefetchSetting
from conveyor.runtime.registry import HandlerRegistry
from conveyor.runtime.runner import Runner
from tests.conformance.worker.helpers import wait_for
from tests.unit.keepers import RecordingKeeper
from tests.unit.records import active_record


class Gate(BaseModel):
    n: int


gated = job("test.gated", Gate, result=int)
LIMITED = {
    "rate": job("test.gated", Gate, result=int, rate_limit=Rate(10, per=1.0)),
    "group": job("test.gated", Gate, result=int, group_key=lambda p: str(p.n % 2)),
}


class _Completer(Completer):
    """Records what is submitted instead of writing it."""

    def __init__(self, driver: MemoryDriver, config: WorkerConfig) -> None:
        super().__init__(driver, retention=Retention(), clock=config.clock)
        self.submitted: list[FinishJob] = []

    def submit(self, finish: FinishJob, on_result: OnResult) -> None:
        self.submitted.append(finish)


class _Setup:
    def __init__(
        self,
        prefetch: PrefetchSetting = 2,
        *,
        concurrency: int = 1,
        limited: str | None = None,
        lease_ahead: bool = False,
    ) -> None:
        self.release = {n: asyncio.Event() for n in range(10)}
        self.started: list[int] = []
        registry = HandlerRegistry()

        async def handle(payload: Gate, ctx: JobContext) -> int:
            self.started.append(payload.n)
            await self.release[payload.n].wait()
            return payload.n

        registry.add(LIMITED.get(limited, gated), handle)
        driver = MemoryDriver()
        if lease_ahead:  # as the Redis driver declares
            driver.capabilities = driver.capabilities | {Capability.LEASE_AHEAD}
        config = WorkerConfig(concurrency=concurrency, prefetch=prefetch)
        self.completer = _Completer(driver, config)
        self.runner = Runner(
            driver=driver,
            registry=registry,
            completer=self.completer,
            config=config,
            worker_id="w",
            max_result_bytes=10_000,
            stats=WorkerStats(),
            slot_freed=asyncio.Event(),
        )
        self.keeper = RecordingKeeper()
        self.runner.keeper = self.keeper

    def kinds(self) -> list[tuple[str, TransitionKind]]:
        return [(f.job_id, f.kind) for f in self.completer.submitted]


def _record(n: int) -> JobRecord:
    return active_record(
        id=f"j{n}", name="test.gated", payload=b'{"n": %d}' % n, lease_token=f"tok{n}"
    )


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_jobs_beyond_the_slots_are_held_and_started_in_order_as_slots_free() -> None:
    s = _Setup()
    for n in range(3):
        s.runner.offer(_record(n))
    await _settle()
    assert s.started == [0]
    assert [r.id for r in s.runner.ahead] == ["j1", "j2"]
    assert s.keeper.held == {"j0": "tok0", "j1": "tok1", "j2": "tok2"}
    assert (s.runner.count(), s.runner.taken(), s.runner.capacity()) == (1, 3, 3)

    s.release[0].set()
    await _settle()
    assert s.started == [0, 1]
    s.release[1].set()
    await _settle()
    assert s.started == [0, 1, 2]
    assert not s.runner.ahead
    assert [k for _, k in s.kinds()] == [TransitionKind.COMPLETE] * 2
    s.release[2].set()
    await _settle()


async def test_a_job_whose_lease_was_lost_while_it_waited_never_starts() -> None:
    s = _Setup()
    for n in range(3):
        s.runner.offer(_record(n))
    await _settle()
    s.runner.interrupt("j1", StopReason.LEASE_LOST, token="tok-other")  # an older attempt's
    assert [r.id for r in s.runner.ahead] == ["j1", "j2"]
    s.runner.interrupt("j1", StopReason.LEASE_LOST, token="tok1")
    assert [r.id for r in s.runner.ahead] == ["j2"]
    assert "j1" not in s.keeper.held
    assert s.runner._stats.lease_lost == 1  # pyright: ignore[reportPrivateUsage]
    s.release[0].set()
    await _settle()
    assert s.started == [0, 2]
    assert ("j1", TransitionKind.REQUEUE) not in s.kinds()  # nothing is written for it
    s.release[2].set()
    await _settle()


async def test_a_job_cancelled_while_it_waited_is_handed_back_not_started() -> None:
    s = _Setup()
    for n in range(2):
        s.runner.offer(_record(n))
    await _settle()
    s.runner.cancel(["j1"])
    assert not s.runner.ahead
    assert s.kinds() == [("j1", TransitionKind.REQUEUE)]
    s.release[0].set()
    await _settle()
    assert s.started == [0]


async def test_stopping_hands_back_what_waits_ahead_and_starts_nothing_more() -> None:
    s = _Setup()
    for n in range(3):
        s.runner.offer(_record(n))
    await _settle()
    s.runner.hand_back_ahead("the worker is stopping")
    assert s.kinds() == [("j1", TransitionKind.REQUEUE), ("j2", TransitionKind.REQUEUE)]
    s.runner.offer(_record(3))  # a fetch that was in flight: handed back too, not queued
    assert s.kinds()[-1] == ("j3", TransitionKind.REQUEUE)
    s.release[0].set()
    await _settle()
    assert s.started == [0]
    assert not s.runner.ahead
    assert s.runner.taken() == 0


async def test_a_job_offered_while_a_slot_is_free_starts_at_once() -> None:
    s = _Setup(prefetch=0)
    s.runner.offer(_record(0))
    await _settle()
    assert s.started == [0]
    assert s.runner.capacity() == 1
    s.release[0].set()
    await _settle()


async def test_a_cancel_for_a_newer_attempt_leased_ahead_reaches_it_not_the_older_one() -> None:
    """The older attempt lost its lease and still unwinds in its slot; the job's newer attempt,
    leased ahead meanwhile, is the one a cancel reported for its token applies to."""
    s = _Setup()
    s.runner.offer(_record(0))
    await _settle()
    newer = active_record(id="j0", name="test.gated", payload=b'{"n": 0}', lease_token="tok0b")
    s.runner.offer(newer)  # the slot is still taken by the older attempt
    assert [r.lease_token for r in s.runner.ahead] == ["tok0b"]
    s.runner.interrupt("j0", StopReason.CANCELLED, token="tok0b")
    assert not s.runner.ahead
    assert ("j0", TransitionKind.REQUEUE) in s.kinds()
    assert [f.token for f in s.completer.submitted if f.kind is TransitionKind.REQUEUE] == ["tok0b"]


async def test_a_stale_attempt_waiting_ahead_is_dropped_when_the_job_is_leased_again() -> None:
    """j1 waited ahead with tok1; its lease ran out unnoticed, the job was rescued and this
    worker leased it again (tok1b). tok1 must never start: the keeper renews tok1b now, so
    nothing else would ever report tok1 lost."""
    s = _Setup()
    s.runner.offer(_record(0))
    s.runner.offer(_record(1))
    await _settle()
    again = active_record(id="j1", name="test.gated", payload=b'{"n": 1}', lease_token="tok1b")
    s.runner.offer(again)
    assert [r.lease_token for r in s.runner.ahead] == ["tok1b"]
    assert s.keeper.held["j1"] == "tok1b"
    assert s.runner._stats.lease_lost == 1  # pyright: ignore[reportPrivateUsage]
    s.release[0].set()
    await _settle()
    assert s.started == [0, 1]
    assert s.runner.running["j1"].record.lease_token == "tok1b"
    assert not [f for f in s.completer.submitted if f.token == "tok1"]  # nothing written
    s.release[1].set()
    await _settle()


async def test_a_job_leased_again_as_a_suspect_drops_its_stale_attempt_too() -> None:
    s = _Setup()
    s.runner.offer(_record(0))
    s.runner.offer(_record(1))
    await _settle()
    suspect = active_record(
        id="j1", name="test.gated", payload=b'{"n": 1}', lease_token="tok1b", stalls=1
    )
    s.runner.hold(suspect)  # the fetcher holds a suspect until it may run alone
    assert not s.runner.ahead
    s.release[0].set()
    await _settle()
    assert s.started == [0]


async def test_no_more_handlers_run_than_the_concurrency_when_jobs_are_leased_again() -> None:
    s = _Setup(prefetch=4, concurrency=2)
    for n in range(4):  # 0 and 1 run, 2 and 3 wait ahead
        s.runner.offer(_record(n))
    await _settle()
    s.runner.offer(active_record(id="j2", name="test.gated", payload=b'{"n": 2}', lease_token="b"))
    s.runner.offer(_record(4))
    for n in (0, 1, 3):
        s.release[n].set()
        await _settle()
        assert s.runner.count() <= 2
        assert len([t for t in s.runner.tasks() if not t.done()]) <= 2
    assert s.started == [0, 1, 3, 2, 4]
    for n in (2, 4):
        s.release[n].set()
    await _settle()


async def test_a_cancel_notice_reaches_a_newer_attempt_ahead_while_the_older_unwinds() -> None:
    s = _Setup()
    s.runner.offer(_record(0))
    await _settle()
    s.runner.offer(
        active_record(id="j0", name="test.gated", payload=b'{"n": 0}', lease_token="tok0b")
    )
    s.runner.cancel(["j0"])  # a notice names the job, not the attempt
    assert not s.runner.ahead
    assert [(f.token, f.kind) for f in s.completer.submitted] == [("tok0b", TransitionKind.REQUEUE)]


@pytest.mark.parametrize("limited", ["rate", "group"])
async def test_rate_limited_or_grouped_jobs_are_never_leased_ahead(limited: str) -> None:
    s = _Setup(prefetch=5, limited=limited)
    assert s.runner.capacity() == 1
    s.runner.prefetch.observe(0.0001)
    assert s.runner.capacity() == 1


async def test_jobs_that_waited_too_long_for_a_slot_go_back_and_auto_holds_off() -> None:
    s = _Setup(prefetch="auto", lease_ahead=True)
    s.runner.ahead.patience = 0.05
    s.runner.prefetch.observe(0.001)  # short jobs so far
    assert s.runner.capacity() == 2
    for n in range(2):
        s.runner.offer(_record(n))
    await _settle()
    assert [r.id for r in s.runner.ahead] == ["j1"]

    await wait_for(lambda: s.completer.submitted, timeout=5, what="the hand-back")
    assert s.kinds() == [("j1", TransitionKind.REQUEUE)]
    assert not s.runner.ahead
    assert s.runner.capacity() == 1  # nothing leased ahead until a job finishes
    s.release[0].set()
    await _settle()
    assert s.started == [0]
    assert s.runner.capacity() == 1  # job 0's run time (long) starts the average anew
    for _ in range(40):
        s.runner.prefetch.observe(0.001)
    assert s.runner.capacity() == 2  # short jobs again
