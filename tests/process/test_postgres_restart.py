"""A PostgreSQL restart under a running worker process: nothing lost, nothing run twice, and the
worker and the producer reconnect by themselves."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import postgres_test_url
from tests.process.app.jobs import Quick, quick
from tests.process.harness import Harness, wait_for
from tests.servers.postgres_server import PostgresServer

TOTAL = 3000
UP_FRONT = 2500


@pytest.fixture(params=["fast", "immediate"])
def restarting_postgres(request: pytest.FixtureRequest) -> Iterator[tuple[PostgresServer, bool]]:
    # Its own server: the test restarts it, either with a fast shutdown (open connections are
    # ended) or an immediate one (a crash: recovery from the WAL at the next start).
    with PostgresServer() as server:
        yield server, request.param == "immediate"


def test_postgres_restart_loses_no_job_and_the_worker_reconnects(
    tmp_path: Path, restarting_postgres: tuple[PostgresServer, bool]
) -> None:
    server, immediate = restarting_postgres
    h = Harness(tmp_path, postgres_test_url(server.url))
    try:
        w = h.start_worker("--concurrency", "8")
        w.wait_log("worker started")
        ids = [f"r-{i:04d}" for i in range(TOTAL)]
        first = h.queue.enqueue_many(
            [quick.request(Quick(n=i), job_id=ids[i]) for i in range(UP_FRONT)]
        )
        assert len(first) == UP_FRONT

        # Restart while the worker is draining, and while a producer keeps enqueueing one job
        # at a time: both must ride through it on their own.
        wait_for(lambda: len(h.events(event="end")) >= 50, timeout=30, what="work under way")
        produced: list[str] = []
        failures: list[BaseException] = []

        def produce() -> None:
            for i in range(UP_FRONT, TOTAL):
                try:
                    produced.append(h.queue.enqueue(quick, Quick(n=i), job_id=ids[i]).id)
                except BaseException as exc:
                    failures.append(exc)
                    return

        producer = threading.Thread(target=produce)
        producer.start()
        before = len(h.events(event="end"))
        server.restart(immediate=immediate)
        restarted_at = time.monotonic()
        producer.join(timeout=60)
        assert not failures, f"the producer saw {failures!r} across the restart"
        assert len(produced) == TOTAL - UP_FRONT

        wait_for(
            lambda: h.counts() == {"completed": TOTAL},
            timeout=60,
            what=f"all {TOTAL} jobs completed after the restart; now {h.counts()}",
        )
        assert w.alive(), w.log()
        after = [e for e in h.events(event="end")]
        assert before < UP_FRONT, "the restart must land while the worker has work left"
        assert len(after) > before, "the worker went on after the restart"

        starts = Counter(e["job_id"] for e in h.events(event="start"))
        assert set(starts) == set(ids), "every job ran"
        doubles = {job_id: n for job_id, n in starts.items() if n > 1}
        assert not doubles, f"jobs run twice across the restart: {doubles}"
        assert h.store_problems() == []
        assert time.monotonic() - restarted_at < 60

        w.send(signal.SIGTERM)
        assert w.wait_exit(timeout=15) == 0, w.log()
    finally:
        h.kill_all()
        h.queue.close()
