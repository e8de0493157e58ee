"""``conveyor._coalesce.Coalescer`` with a driver that sends a batch from the calling task
(``start_insert``, see :mod:`conveyor.drivers.started`), over stand-ins for the driver's two
insert paths: batches go as they fill, during the loop's pass; what waits at the pass's end goes
then; never more writes in flight than allowed; and every caller keeps its own outcome when a
batch cannot be started, is refused, fails, or one of its callers gives up."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Sequence

from conveyor import BackendUnavailable, InvalidArgument
from conveyor._coalesce import Coalescer
from conveyor.drivers.records import InsertResult, InsertStatus, JobState, NewJob
from tests.unit.test_coalesce import Store, new


class Driver:
    """Both insert paths over one :class:`Store`. A started batch is recorded when it is sent,
    with how many calls had been made by then; every write (either path) is answered once
    ``answer`` is set. ``startable`` false makes ``start`` send nothing."""

    def __init__(self) -> None:
        self.store = Store()
        self.answer = asyncio.Event()
        self.calls = 0  # calls made so far (the test counts them as it makes them)
        self.started: list[tuple[list[str], int]] = []  # (ids, calls made when it was sent)
        self.usual: list[list[str]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.startable = True
        self.offered = 0  # batches offered to start, sent or not
        self.fail_started_with: list[str] = []  # a started batch with this id fails

    async def _answer(self, jobs: Sequence[NewJob], *, started: bool) -> list[InsertResult]:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0)  # a reply never comes within the step that sent the write
            await self.answer.wait()
            if started and any(j.id in self.fail_started_with for j in jobs):
                raise BackendUnavailable("connection dropped")
            return self.store.write(jobs)
        finally:
            self.in_flight -= 1

    async def insert_many(self, jobs: Sequence[NewJob], now: float | None) -> list[InsertResult]:
        self.usual.append([j.id for j in jobs])
        return await self._answer(jobs, started=False)

    def start(
        self, jobs: Sequence[NewJob], now: float | None
    ) -> asyncio.Future[list[InsertResult]] | None:
        self.offered += 1
        if not self.startable:
            return None
        self.started.append(([j.id for j in jobs], self.calls))
        return asyncio.ensure_future(self._answer(jobs, started=True))


def coalescer_over(driver: Driver, *, in_flight: int = 3, send_at: int = 4) -> Coalescer:
    return Coalescer(
        driver.insert_many, start_insert=driver.start, in_flight=in_flight, send_at=send_at
    )


async def call(driver: Driver, coalescer: Coalescer, job_id: str) -> InsertResult:
    driver.calls += 1
    return await coalescer.insert(new(job_id), None)


async def passes(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_batches_go_as_they_fill_during_the_pass_and_never_more_in_flight_than_allowed():
    driver = Driver()
    coalescer = coalescer_over(driver, in_flight=3, send_at=4)
    ids = [f"j{i}" for i in range(20)]
    calls = asyncio.gather(*(call(driver, coalescer, i) for i in ids))
    await passes()
    # The first call alone; then a batch each time four calls wait, sent before the next
    # caller's step (calls made when sent: 5 and 9), until three writes are in flight.
    assert driver.usual == [["j0"]]
    assert driver.started == [(["j1", "j2", "j3", "j4"], 5), (["j5", "j6", "j7", "j8"], 9)]
    driver.answer.set()
    results = await calls
    assert [r.id for r in results] == ids
    assert all(r.status is InsertStatus.INSERTED for r in results)
    assert driver.most_in_flight == 3
    written = [i for batch in driver.usual for i in batch]
    written += [i for batch, _ in driver.started for i in batch]
    assert sorted(written) == sorted(ids)  # each job written once


async def test_what_waits_when_the_pass_ends_goes_then_without_waiting_for_a_reply():
    driver = Driver()
    coalescer = coalescer_over(driver, send_at=25)
    calls = asyncio.gather(*(call(driver, coalescer, f"j{i}") for i in range(3)))
    await passes()
    assert driver.usual == [["j0"]]
    assert driver.started == [(["j1", "j2"], 3)]  # while the first write is unanswered
    driver.answer.set()
    assert [r.id for r in await calls] == ["j0", "j1", "j2"]


async def test_a_batch_that_cannot_be_started_goes_the_usual_way_one_write_at_a_time():
    driver = Driver()
    driver.startable = False
    coalescer = coalescer_over(driver)
    calls = asyncio.gather(*(call(driver, coalescer, f"j{i}") for i in range(10)))
    await passes()
    driver.answer.set()
    assert [r.id for r in await calls] == [f"j{i}" for i in range(10)]
    assert driver.started == []
    assert driver.usual == [["j0"], [f"j{i}" for i in range(1, 10)]]
    assert driver.most_in_flight == 1


async def test_a_refused_started_batch_is_written_job_by_job_and_a_failed_one_fails_its_own():
    driver = Driver()
    driver.answer.set()
    driver.fail_started_with = ["j6"]
    coalescer = coalescer_over(driver, in_flight=4, send_at=4)
    ids = ["j0", "j1", "bad-j2", "j3", "j4", "j5", "j6", "j7", "j8"]
    outcomes = await asyncio.gather(
        *(call(driver, coalescer, i) for i in ids), return_exceptions=True
    )
    assert [b for b, _ in driver.started] == [
        ["j1", "bad-j2", "j3", "j4"],
        ["j5", "j6", "j7", "j8"],
    ]
    # The refused batch wrote nothing: each of its jobs alone finds the one at fault.
    assert driver.usual == [["j0"], ["j1"], ["bad-j2"], ["j3"], ["j4"]]
    assert isinstance(outcomes[2], InvalidArgument)
    # The failed batch fails its own callers only, and is not sent again here.
    for n in (5, 6, 7, 8):
        assert isinstance(outcomes[n], BackendUnavailable), outcomes[n]
    for n in (0, 1, 3, 4):
        result = outcomes[n]
        assert isinstance(result, InsertResult) and result.id == ids[n]
    assert driver.store.ids == {"j0", "j1", "j3", "j4"}


async def test_a_caller_that_gives_up_leaves_the_others_of_its_batch_written():
    driver = Driver()
    coalescer = coalescer_over(driver, send_at=4)
    tasks = [asyncio.ensure_future(call(driver, coalescer, f"j{i}")) for i in range(5)]
    await passes()
    assert driver.started == [(["j1", "j2", "j3", "j4"], 5)]
    tasks[1].cancel()  # the caller whose call filled nothing: the batch is sent already
    tasks[4].cancel()  # the caller whose call sent the batch
    driver.answer.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(outcomes[1], asyncio.CancelledError)
    assert isinstance(outcomes[4], asyncio.CancelledError)
    assert [o.id for o in outcomes if isinstance(o, InsertResult)] == ["j0", "j2", "j3"]
    # Sent before they gave up: written, as a lone call that gives up after sending is.
    assert driver.store.ids == {"j0", "j1", "j2", "j3", "j4"}
    # The coalescer is free again: a lone call goes at once.
    assert (await call(driver, coalescer, "lone")).id == "lone"
    assert driver.usual[-1] == ["lone"]


async def test_writes_cancelled_before_they_ran_leave_nothing_counted_and_no_call_waiting():
    """Tasks cancelled in the pass that made them (a shutdown that cancels every other task
    and goes on using the loop) never run a line of their own: the coalescer must still see
    nothing in flight, cancel their callers, and write the next call at once."""
    driver = Driver()
    coalescer = coalescer_over(driver, send_at=4)
    me = asyncio.current_task()
    tasks = [asyncio.ensure_future(call(driver, coalescer, f"j{i}")) for i in range(9)]
    await asyncio.sleep(0)  # every caller's first step: two batches sent, in tasks not yet run
    assert len(driver.started) == 2
    others = [t for t in asyncio.all_tasks() if t is not me]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)
    assert all(t.cancelled() for t in tasks)
    driver.answer.set()
    assert (await asyncio.wait_for(call(driver, coalescer, "next"), 5)).id == "next"
    assert driver.usual[-1] == ["next"]  # nothing in flight: written at once, alone
    # And a burst after it is batched as before.
    driver.started.clear()
    results = await asyncio.gather(*(call(driver, coalescer, f"k{i}") for i in range(9)))
    assert [r.id for r in results] == [f"k{i}" for i in range(9)]
    assert [b for b, _ in driver.started] == [["k1", "k2", "k3", "k4"], ["k5", "k6", "k7", "k8"]]


async def test_a_batch_that_cannot_be_started_for_a_while_goes_alone_then_starts_resume():
    """While ``start_insert`` cannot send (the Redis driver's list of queues is too old, say),
    each batch is written the usual way, one at a time; once it can again, batches are sent
    as they fill: the usual path does not keep the writes for itself."""
    driver = Driver()
    driver.answer.set()
    coalescer = coalescer_over(driver, in_flight=4, send_at=4)
    driver.startable = False
    first = await asyncio.gather(*(call(driver, coalescer, f"a{i}") for i in range(9)))
    assert driver.started == []
    assert driver.most_in_flight == 1
    driver.startable = True
    second = await asyncio.gather(*(call(driver, coalescer, f"b{i}") for i in range(9)))
    assert [b for b, _ in driver.started] == [["b1", "b2", "b3", "b4"], ["b5", "b6", "b7", "b8"]]
    assert [r.id for r in first + second] == [f"a{i}" for i in range(9)] + [
        f"b{i}" for i in range(9)
    ]


async def test_a_start_that_raises_leaves_its_batch_to_the_usual_write():
    driver = Driver()
    driver.answer.set()

    def broken(jobs: Sequence[NewJob], now: float | None) -> None:
        raise TypeError("a driver that breaks its promise not to raise")

    coalescer = Coalescer(driver.insert_many, start_insert=broken, send_at=4)
    results = await asyncio.gather(*(call(driver, coalescer, f"j{i}") for i in range(6)))
    assert [r.id for r in results] == [f"j{i}" for i in range(6)]
    # Put back while the first write was in flight, then written together once it ended.
    assert driver.usual == [["j0"], ["j1", "j2", "j3", "j4", "j5"]]


async def test_a_start_that_cannot_send_is_not_offered_another_batch_until_a_write_ends():
    """A batch ``start_insert`` cannot send (a dedup key, two queues) is not built and offered
    again by every call that comes while a write is in flight: one offer per write that ends."""
    driver = Driver()
    driver.startable = False
    coalescer = coalescer_over(driver, send_at=4)
    calls = asyncio.gather(*(call(driver, coalescer, f"j{i}") for i in range(200)))
    await passes()
    assert driver.offered == 1  # when the fourth call waited; the 196 after it were not offered
    driver.answer.set()
    assert len(await calls) == 200
    assert driver.offered <= 1 + len(driver.usual)


def test_a_lone_call_of_a_closed_loop_ending_later_leaves_the_next_loop_counted_right():
    """A lone call pending when its loop was closed ends when it is collected, after the next
    loop began using the coalescer: it must not count its write down there."""
    driver = Driver()
    driver.answer.set()
    coalescer = coalescer_over(driver)
    first = asyncio.new_event_loop()

    async def leave_one_pending() -> None:
        asyncio.get_running_loop().create_task(coalescer.insert(new("orphan"), None))
        await asyncio.sleep(0)

    first.run_until_complete(leave_one_pending())
    first.close()

    async def next_loop() -> list[str]:
        await coalescer.insert(new("a"), None)  # the coalescer is this loop's from here on
        nonlocal first
        del first
        gc.collect()  # the orphan's coroutine is closed: its ``finally`` runs now
        results = await asyncio.wait_for(
            asyncio.gather(*(coalescer.insert(new(f"b{i}"), None) for i in range(6))), 5
        )
        return [r.id for r in results]

    assert asyncio.run(next_loop()) == [f"b{i}" for i in range(6)]


async def test_a_drain_cancelled_while_it_writes_a_refused_batch_job_by_job_settles_them_all():
    """One write at a time (no start_insert): the drainer, cancelled while it writes a refused
    batch's jobs one by one, cancels those it had not written rather than leave them waiting."""
    stuck = asyncio.Event()

    async def insert_many(jobs: Sequence[NewJob], now: float | None) -> list[InsertResult]:
        await asyncio.sleep(0)
        if len(jobs) > 1 and any(j.id == "bad" for j in jobs):
            raise InvalidArgument("refused")
        if [j.id for j in jobs] == ["bad"]:
            stuck.set()
            await asyncio.Event().wait()  # this job's own write never ends
        return [InsertResult(j.id, InsertStatus.INSERTED, JobState.QUEUED) for j in jobs]

    coalescer = Coalescer(insert_many)
    ids = ["lone", "x1", "bad", "x3", "x4"]
    tasks = [asyncio.ensure_future(coalescer.insert(new(i), None)) for i in ids]
    await asyncio.wait_for(stuck.wait(), 5)
    drainers = [t for t in asyncio.all_tasks() if t.get_name() == "conveyor-enqueue-batch"]
    assert len(drainers) == 1
    drainers[0].cancel()
    _, pending = await asyncio.wait(tasks, timeout=5)
    assert not pending
    assert [t.cancelled() for t in tasks] == [False, False, True, True, True]
    assert [t.result().id for t in tasks[:2]] == ["lone", "x1"]
    assert (await asyncio.wait_for(coalescer.insert(new("next"), None), 5)).id == "next"
