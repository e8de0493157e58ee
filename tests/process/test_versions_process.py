"""A rolling deploy with real ``conveyor worker`` processes on SQLite: a job enqueued by the old
definition runs on a new worker (its payload upgraded), and a job of the new definition that an
old worker fetches is handed back, neither failed nor lost, and runs once a new worker starts."""

from __future__ import annotations

import signal

import pytest

from tests.process.app.versions_worker import GreetV1, GreetV2, greet_v1, greet_v2
from tests.process.harness import Harness

pytestmark = [pytest.mark.process, pytest.mark.timeout(300)]

OLD = "tests.process.app.versions_worker:old"
NEW = "tests.process.app.versions_worker:new"


@pytest.mark.parametrize("harness", ["sqlite"], indirect=True)
def test_a_rolling_deploy_loses_and_fails_no_job_of_either_version(harness: Harness) -> None:
    h = harness
    # The old code is live: producers and workers of version 1.
    old_worker = h.start_worker(target=OLD)
    before = h.queue.enqueue(greet_v1, GreetV1(name="Ada Lovelace"), job_id="v1-before")
    assert h.wait_state(before.id, "completed").result == "v1:Ada Lovelace"

    # A producer of the new code enqueues while the old worker still runs: handed back.
    newer = h.queue.enqueue(greet_v2, GreetV2(first_name="Alan", last_name="Turing"), job_id="v2")
    info = h.wait_state(newer.id, "scheduled")
    assert info.attempt == 0, "a hand-back must not spend an attempt"
    assert info.error is not None and info.error.startswith("NewerJobVersion:"), info.error
    assert "version 2" in info.error and "has version 1" in info.error
    assert h.events(newer.id) == [], "the old handler must never see the new payload"

    old_worker.send(signal.SIGTERM)
    assert old_worker.wait_exit(timeout=30) == 0, old_worker.log()
    # Between the two deploys, producers still running the old code enqueue version 1.
    late = h.queue.enqueue(greet_v1, GreetV1(name="Grace Hopper"), job_id="v1-late")
    assert h.job(newer.id).state.value == "scheduled"

    # The new code is live: the old job is upgraded, the newer one runs after its hand-back delay
    # (10 s), and a job of version 2 enqueued now runs as it is.
    new_worker = h.start_worker(target=NEW)
    assert h.wait_state(late.id, "completed").result == "v2:Grace/Hopper"
    current = h.queue.enqueue(greet_v2, GreetV2(first_name="Edsger", last_name="Dijkstra"))
    assert h.wait_state(current.id, "completed").result == "v2:Edsger/Dijkstra"
    info = h.wait_state(newer.id, "completed", timeout=40)
    assert info.result == "v2:Alan/Turing"
    assert info.attempt == 1 and len(info.errors) == 1
    assert [e["pid"] for e in h.events(newer.id)] == [new_worker.pid] * 2
    new_worker.send(signal.SIGTERM)
    assert new_worker.wait_exit(timeout=30) == 0, new_worker.log()
    assert "failed" not in h.counts()
    assert h.store_problems() == []
