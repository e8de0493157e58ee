"""Model-based test: random operation sequences against each real backend and the memory
reference.

Both drivers receive the same operations with the same fake clock; after every step their
observable results and full job tables must agree. Lease tokens and exact ``seq`` numbers may
legitimately differ (tokens are random, SQLite reserves sequence blocks, Redis derives them from
its clock), so records are compared with the token reduced to "held or not" and ``seq`` to its
rank.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from conveyor.backends.memory import MemoryDriver
from conveyor.backends.registry import driver_for_url
from conveyor.drivers.protocol import Driver
from conveyor.drivers.records import (
    Dedup,
    DedupMode,
    FetchParams,
    FinishJob,
    JobRecord,
    Lease,
    ListParams,
    NewJob,
    ProgressUpdate,
    PurgeParams,
    RateLimit,
    Retention,
    TransitionKind,
)
from conveyor.runtime.maintenance import rescue_expired

T = TypeVar("T")
T0 = 1_700_000_000.0
IDS = ["a", "b", "c", "d", "e", "f"]
QUEUES = ["q1", "q2"]
RATE = RateLimit("q1", 2, 10.0)  # what a fetch with a rate limit applies

ids = st.lists(st.sampled_from(IDS), min_size=1, max_size=4)
queues = st.lists(st.sampled_from(QUEUES), min_size=1, max_size=2, unique=True)
retentions = st.builds(
    Retention,
    completed_max_count=st.sampled_from([None, 0, 1, 2]),
    completed_max_age=st.sampled_from([None, 5.0, 60.0]),
    failed_max_age=st.sampled_from([None, 5.0]),
    cancelled_max_age=st.sampled_from([None, 5.0]),
)


def _normalized(jobs: list[JobRecord]) -> list[JobRecord]:
    """Records with the token reduced to held / not held and seq to its rank."""
    rank = {job.id: n for n, job in enumerate(sorted(jobs, key=lambda j: j.seq))}
    return [
        dataclasses.replace(
            job,
            lease_token=None if job.lease_token is None else "held",
            seq=rank[job.id],
        )
        for job in jobs
    ]


class DriversAgree(RuleBasedStateMachine):
    # The URL of a fresh store of the backend under test, given a private temporary directory.
    real_url: ClassVar[Callable[[Path], str]]

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = tempfile.mkdtemp(prefix="conveyor-model-")
        self.model: Driver = MemoryDriver("memory://")
        self.real: Driver = driver_for_url(type(self).real_url(Path(self.tmp)))
        self.run(self.model.open())
        self.run(self.real.open())
        self.now = T0
        # Every token pair (model, real) issued per job id, oldest first.
        self.tokens: dict[str, list[tuple[str, str]]] = {}

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def both(self, call: Any) -> Any:
        """Run ``call(driver)`` on both drivers, assert the results agree, return the model's."""
        expected = self.run(call(self.model))
        actual = self.run(call(self.real))
        assert actual == expected, f"{self.real!r} returned {actual!r}, memory {expected!r}"
        return expected

    def teardown(self) -> None:
        try:
            self.run(self.real.close())
            self.run(self.model.close())
        finally:
            self.loop.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    @initialize(job_ids=ids, queue=st.sampled_from(QUEUES))
    def seed(self, job_ids: list[str], queue: str) -> None:
        # Start with runnable work so that fetch, finish and extend do something from step one.
        self._insert(job_ids, queue, 0, 0.0, None, None)

    # -- time --------------------------------------------------------------------------------

    @rule(seconds=st.sampled_from([0.5, 1.0, 5.0, 10.0, 31.0]))
    def advance(self, seconds: float) -> None:
        self.now += seconds

    # -- producers ---------------------------------------------------------------------------

    @rule(
        job_ids=ids,
        queue=st.sampled_from(QUEUES),
        priority=st.integers(0, 2),
        delay=st.sampled_from([0.0, 0.0, 5.0, 30.0]),
    )
    def insert(self, job_ids: list[str], queue: str, priority: int, delay: float) -> None:
        self._insert(job_ids, queue, priority, delay, None, None)

    @rule(
        job_ids=ids,
        queue=st.sampled_from(QUEUES),
        keep_completed=st.sampled_from([None, 0.0, 5.0]),
        keep_failed=st.sampled_from([None, 0.0, 5.0]),
    )
    def insert_with_retention(
        self,
        job_ids: list[str],
        queue: str,
        keep_completed: float | None,
        keep_failed: float | None,
    ) -> None:
        self._insert(job_ids, queue, 0, 0.0, keep_completed, keep_failed)

    def _insert(
        self,
        job_ids: list[str],
        queue: str,
        priority: int,
        delay: float,
        keep_completed: float | None,
        keep_failed: float | None,
    ) -> None:
        jobs = [
            NewJob(
                i,
                queue,
                "model.job",
                i.encode(),
                priority=priority,
                delay=delay,
                keep_completed=keep_completed,
                keep_failed=keep_failed,
            )
            for i in job_ids
        ]
        self.both(lambda d: d.job_insert_many(jobs, now=self.now))

    @rule(
        job_ids=ids,
        queue=st.sampled_from(QUEUES),
        mode=st.sampled_from(list(DedupMode)),
        key=st.sampled_from(["k1", "k2"]),
        seconds=st.sampled_from([5.0, 30.0]),
    )
    def insert_keyed(
        self, job_ids: list[str], queue: str, mode: DedupMode, key: str, seconds: float
    ) -> None:
        # The payload names the time, so a debounce's replacement shows in the comparison.
        dedup = Dedup(mode, key, seconds if mode is DedupMode.THROTTLE else 0.0)
        delay = seconds if mode is DedupMode.DEBOUNCE else 0.0
        jobs = [
            NewJob(i, queue, "model.job", f"{i}@{self.now}".encode(), delay=delay, dedup=dedup)
            for i in job_ids
        ]
        self.both(lambda d: d.job_insert_many(jobs, now=self.now))

    # -- workers -----------------------------------------------------------------------------

    @rule(
        queues=queues,
        limit=st.integers(1, 3),
        lease=st.sampled_from([10.0, 30.0]),
        limited=st.booleans(),
    )
    def fetch(self, queues: list[str], limit: int, lease: float, limited: bool = False) -> None:
        rates = (RATE,) if limited else ()
        params = FetchParams(tuple(queues), limit, "worker", lease, rate_limits=rates)
        model = self.run(self.model.job_fetch(params, now=self.now))
        real = self.run(self.real.job_fetch(params, now=self.now))
        assert _normalized(real) == _normalized(model)
        assert [j.id for j in real] == [j.id for j in model]
        for m, r in zip(model, real, strict=True):
            assert m.lease_token is not None and r.lease_token is not None
            self.tokens.setdefault(m.id, []).append((m.lease_token, r.lease_token))

    @rule(
        queues=queues,
        limit=st.integers(1, 3),
        kind=st.sampled_from(list(TransitionKind)),
        later=st.sampled_from([0.0, 5.0, 20.0]),
        retention=retentions,
    )
    def fetch_then_finish(
        self,
        queues: list[str],
        limit: int,
        kind: TransitionKind,
        later: float,
        retention: Retention,
    ) -> None:
        before = {job_id: len(pairs) for job_id, pairs in self.tokens.items()}
        self.fetch(queues, limit, 30.0)
        fetched = [i for i, pairs in self.tokens.items() if len(pairs) != before.get(i, 0)]
        self._finish(fetched, kind, "current", later, retention)

    def _token_pair(self, job_id: str, which: str) -> tuple[str, str]:
        issued = self.tokens[job_id]
        if which == "current":
            return issued[-1]
        if which == "stale" and len(issued) > 1:
            return issued[0]
        return ("bogus", "bogus")

    @precondition(lambda self: bool(self.tokens))
    @rule(
        data=st.data(),
        kind=st.sampled_from(list(TransitionKind)),
        which=st.sampled_from(["current", "current", "current", "stale", "bogus"]),
        later=st.sampled_from([0.0, 5.0, 20.0]),
        retention=retentions,
    )
    def finish(
        self,
        data: st.DataObject,
        kind: TransitionKind,
        which: str,
        later: float,
        retention: Retention,
    ) -> None:
        job_ids = data.draw(st.lists(st.sampled_from(sorted(self.tokens)), min_size=1, max_size=3))
        self._finish(job_ids, kind, which, later, retention)

    def _finish(
        self,
        job_ids: list[str],
        kind: TransitionKind,
        which: str,
        later: float,
        retention: Retention,
    ) -> None:
        def finishes(side: int) -> list[FinishJob]:
            return [
                FinishJob(
                    i,
                    self._token_pair(i, which)[side],
                    kind,
                    result=b"done" if kind is TransitionKind.COMPLETE else None,
                    error="boom" if kind is not TransitionKind.COMPLETE else None,
                    delay=later,
                )
                for i in job_ids
            ]

        model = self.run(self.model.job_finish_many(finishes(0), retention=retention, now=self.now))
        real = self.run(self.real.job_finish_many(finishes(1), retention=retention, now=self.now))
        assert real == model

    @precondition(lambda self: bool(self.tokens))
    @rule(
        data=st.data(),
        which=st.sampled_from(["current", "stale"]),
        lease=st.just(30.0),
        isolated=st.booleans(),
    )
    def extend(self, data: st.DataObject, which: str, lease: float, isolated: bool) -> None:
        job_ids = data.draw(st.lists(st.sampled_from(sorted(self.tokens)), min_size=1, max_size=3))

        def leases(side: int) -> list[Lease]:
            return [Lease(i, self._token_pair(i, which)[side], isolated=isolated) for i in job_ids]

        model = self.run(self.model.job_extend_leases(leases(0), lease, now=self.now))
        real = self.run(self.real.job_extend_leases(leases(1), lease, now=self.now))
        assert real == model

    @precondition(lambda self: bool(self.tokens))
    @rule(
        data=st.data(),
        which=st.sampled_from(["current", "current", "stale", "bogus"]),
        fraction=st.sampled_from([0.0, 0.5, 1.0]),
        message=st.sampled_from([None, "step"]),
    )
    def progress(
        self, data: st.DataObject, which: str, fraction: float, message: str | None
    ) -> None:
        job_ids = data.draw(st.lists(st.sampled_from(sorted(self.tokens)), min_size=1, max_size=3))

        def updates(side: int) -> list[ProgressUpdate]:
            return [
                ProgressUpdate(i, self._token_pair(i, which)[side], fraction, message)
                for i in job_ids
            ]

        model = self.run(self.model.job_progress_many(updates(0), now=self.now))
        real = self.run(self.real.job_progress_many(updates(1), now=self.now))
        assert real == model

    # -- maintenance and operators ------------------------------------------------------------

    @rule(max_stalls=st.integers(0, 2), limit=st.integers(-1, 4))
    def rescue(self, max_stalls: int, limit: int) -> None:
        # Each side decides from what its own backend reports (the tokens differ).
        model = self.run(
            rescue_expired(self.model, max_stalls=max_stalls, limit=limit, now=self.now)
        )
        real = self.run(rescue_expired(self.real, max_stalls=max_stalls, limit=limit, now=self.now))
        assert [(r.job_id, r.kind, r.stalls, r.error, w) for r, w in real] == [
            (r.job_id, r.kind, r.stalls, r.error, w) for r, w in model
        ]

    @rule(max_stalls=st.integers(0, 2))
    def crash_then_rescue(self, max_stalls: int) -> None:
        # A worker died holding its leases: time passes beyond any lease, maintenance rescues.
        self.advance(31.0)
        self.rescue(max_stalls, limit=10)

    @rule(limit=st.integers(-1, 4))
    def promote(self, limit: int) -> None:
        self.both(lambda d: d.job_promote_due(limit=limit, now=self.now))

    @rule(job_ids=ids)
    def cancel(self, job_ids: list[str]) -> None:
        self.both(lambda d: d.job_cancel_many(job_ids, now=self.now))

    @rule(job_ids=ids)
    def retry(self, job_ids: list[str]) -> None:
        self.both(lambda d: d.job_retry_many(job_ids, now=self.now))

    @rule(retention=retentions, limit=st.integers(-1, 4))
    def prune(self, retention: Retention, limit: int) -> None:
        self.both(lambda d: d.job_prune_finished(retention, limit=limit, now=self.now))

    @rule(queue=st.sampled_from([None, *QUEUES]), age=st.sampled_from([None, 3.0]))
    def purge(self, queue: str | None, age: float | None) -> None:
        before = None if age is None else self.now - age
        params = PurgeParams(queue=queue, finished_before=before)
        self.both(lambda d: d.job_purge(params, now=self.now))

    @rule(seconds=st.sampled_from([0.0, 2.0, 12.0]))
    def rate_limit_block(self, seconds: float) -> None:
        self.both(lambda d: d.rate_limit_block(RATE.queue, seconds, now=self.now))

    @rule()
    def rate_limit_wait(self) -> None:
        self.both(lambda d: d.rate_limit_wait([RATE], now=self.now))

    @rule(queue=st.sampled_from(QUEUES), paused=st.booleans())
    def pause_or_resume(self, queue: str, paused: bool) -> None:
        self.both(lambda d: d.queue_pause(queue) if paused else d.queue_resume(queue))

    # -- whole-state comparison ----------------------------------------------------------------

    @invariant()
    def same_jobs(self) -> None:
        listing = ListParams(limit=1000)
        model = self.run(self.model.job_list(listing))
        real = self.run(self.real.job_list(listing))
        assert _normalized(real) == _normalized(model)

    @invariant()
    def same_queues(self) -> None:
        self.both(lambda d: d.queue_list())


MODEL_SETTINGS = settings(
    max_examples=40,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.parametrize("backend_name", ["sqlite", "redis", "postgres"])
def test_backend_agrees_with_the_reference_model(
    backend_name: str, request: pytest.FixtureRequest
) -> None:
    if backend_name == "sqlite":

        def real_url(tmp: Path) -> str:
            return f"sqlite:///{tmp / 'model.db'}"

    elif backend_name == "postgres":
        from tests.conftest import drop_test_schema, postgres_test_url

        pg_base = request.getfixturevalue("postgres_base_url")
        made: list[str] = []

        def real_url(tmp: Path) -> str:
            made.append(postgres_test_url(pg_base))  # a new schema: each example starts empty
            return made[-1]

        request.addfinalizer(lambda: [drop_test_schema(url) for url in made])
    else:
        from tests.conftest import redis_test_url

        base = request.getfixturevalue("redis_base_url")

        def real_url(tmp: Path) -> str:
            return redis_test_url(base)  # a new key prefix: each example starts empty

    machine = type(f"{backend_name.title()}AgreesWithModel", (DriversAgree,), {})
    machine.real_url = staticmethod(real_url)  # type: ignore[assignment]
    run_state_machine_as_test(machine, settings=MODEL_SETTINGS)
