"""``conveyor relay`` and ``conveyor worker --relay-from`` as real processes: killed with SIGKILL
at random moments while producers commit (and roll back) jobs and a Redis worker runs them,
every committed job runs exactly once and no rolled-back one ever exists; stopped with SIGTERM,
they finish the batch in hand and exit 0."""

from __future__ import annotations

import random
import re
import signal
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from conveyor.drivers.records import NewJob
from conveyor.drivers.transactional import run_plan
from conveyor.outbox import Outbox, PostgresOutbox, SQLiteOutbox, outbox_for_url
from tests.conftest import drop_test_schema, postgres_test_url, redis_test_url
from tests.outbox.conftest import psycopg_execute, sqlite_execute
from tests.process.app.jobs import Quick, quick
from tests.process.harness import Harness, WorkerProcess, wait_for

pytestmark = pytest.mark.process

KILLS = 15
BURST = 400


@pytest.fixture
def harness(tmp_path: Path, redis_base_url: str) -> Iterator[Harness]:
    h = Harness(tmp_path, redis_test_url(redis_base_url))
    try:
        yield h
    finally:
        h.kill_all()
        h.queue.close()


@pytest.fixture(params=["postgres", "sqlite"])
def outbox_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'app.db'}"
        return
    url = postgres_test_url(request.getfixturevalue("postgres_base_url"))
    yield url
    drop_test_schema(url)


def start_relay(h: Harness, outbox_url: str, *args: str) -> WorkerProcess:
    """A ``conveyor relay`` subprocess, tracked by the harness (killed by pid at teardown)."""
    n = len(h.processes)
    out, err = h.root / f"relay{n}.out", h.root / f"relay{n}.err"
    with out.open("wb") as fout, err.open("wb") as ferr:
        popen = subprocess.Popen(
            h.cli_args("relay", "--from", outbox_url, *args),
            cwd=h.root,
            env=h.env,
            stdin=subprocess.DEVNULL,
            stdout=fout,
            stderr=ferr,
        )
    proc = WorkerProcess(popen, out, err)
    h.processes.append(proc)
    return proc


def transaction_runner(
    box: Outbox,
) -> tuple[Callable[[list[NewJob], bool], None], Callable[[], None]]:
    """``write(jobs, commit)`` in a transaction of the application's own, and ``close()``."""
    if isinstance(box, SQLiteOutbox):
        conn = sqlite3.connect(box.path, timeout=30, isolation_level=None)

        def write_sqlite(jobs: list[NewJob], commit: bool) -> None:
            conn.execute("BEGIN IMMEDIATE")
            run_plan(box.insert_plan(jobs), sqlite_execute(conn))
            conn.execute("COMMIT" if commit else "ROLLBACK")

        return write_sqlite, conn.close
    assert isinstance(box, PostgresOutbox)
    pg = psycopg.connect(box.conninfo)

    def write_pg(jobs: list[NewJob], commit: bool) -> None:
        run_plan(box.insert_plan(jobs), psycopg_execute(pg))
        if commit:
            pg.commit()
        else:
            pg.rollback()

    return write_pg, pg.close


def quick_job(job_id: str, n: int) -> NewJob:
    payload = Quick(n=n).model_dump_json().encode()
    return NewJob(id=job_id, queue=quick.queue, name=quick.name, payload=payload)


def outbox_rows(box: Outbox) -> int:
    if isinstance(box, SQLiteOutbox):
        conn = sqlite3.connect(box.path, timeout=30)
        try:
            return int(conn.execute("SELECT count(*) FROM conveyor_outbox").fetchone()[0])
        finally:
            conn.close()
    assert isinstance(box, PostgresOutbox)
    with psycopg.connect(box.conninfo) as pg:
        row = pg.execute(f'SELECT count(*) FROM "{box.schema}".conveyor_outbox'.encode())
        found = row.fetchone()
        assert found is not None
        return int(found[0])


def relay_totals(logs: str) -> Counter[str]:
    totals: Counter[str] = Counter()
    for line in logs.splitlines():
        if " relayed " in line:
            for key in ("moved", "duplicates", "set_aside"):
                match = re.search(rf"\b{key}=(\d+)", line)
                if match:
                    totals[key] += int(match[1])
    return totals


def test_relay_killed_again_and_again_loses_and_doubles_nothing(
    harness: Harness, outbox_url: str
) -> None:
    h = harness
    box = outbox_for_url(outbox_url)
    box.ensure_schema()
    worker = h.start_worker("--concurrency", "8")
    worker.wait_log("worker started")

    committed: list[str] = []
    rolled_back: list[str] = []
    failures: list[BaseException] = []
    done = threading.Event()
    rng = random.Random()

    def produce() -> None:
        write, close = transaction_runner(box)
        try:
            n = 0
            # A steady stream of small transactions, about 150 jobs a second.
            while not done.is_set():
                size = rng.randint(1, 8)
                ids = [f"s-{n + i}" for i in range(size)]
                keep = rng.random() > 0.2
                write([quick_job(i, n) for i in ids], keep)
                (committed if keep else rolled_back).extend(ids)
                n += size
                done.wait(0.03)
        except BaseException as exc:
            failures.append(exc)
        finally:
            close()

    producer = threading.Thread(target=produce)
    producer.start()
    burst, close_burst = transaction_runner(box)
    try:
        relays = []
        for k in range(KILLS):
            relay = start_relay(h, outbox_url, "--batch-size", "50")
            relays.append(relay)
            relay.wait_log("relay started", timeout=20)
            # A burst of transactions the relay takes some tens of milliseconds to move, and
            # the kill at a random moment of it: reading, writing to Redis, deleting...
            for t in range(BURST // 50):
                ids = [f"b-{k}-{t}-{i}" for i in range(50)]
                keep = t % 4 != 3
                burst([quick_job(i, k) for i in ids], keep)
                (committed if keep else rolled_back).extend(ids)
            time.sleep(rng.uniform(0.0, 0.08))
            relay.send(signal.SIGKILL)
            relay.wait_exit(10)
    finally:
        done.set()
        producer.join(60)
        close_burst()
    assert not failures, failures
    assert committed and rolled_back

    last = start_relay(h, outbox_url)
    last.wait_log("relay started", timeout=20)
    wait_for(
        lambda: len(h.events(event="end")) >= len(committed),
        timeout=40,
        what=f"{len(committed)} committed jobs to run",
    )
    assert outbox_rows(box) == 0
    ends = Counter(e["job_id"] for e in h.events(event="end"))
    starts = Counter(e["job_id"] for e in h.events(event="start"))
    assert set(ends) == set(committed), "every committed job ran, and nothing else did"
    assert set(ends.values()) == {1} and set(starts.values()) == {1}, "each exactly once"
    assert sum(h.counts().values()) == len(committed), "no other job in Redis"
    assert all(h.queue.get(i) is None for i in rolled_back[:100]), "no rolled-back job"
    assert not h.store_problems()
    last.send(signal.SIGTERM)
    assert last.wait_exit(20) == 0
    # A relay killed after its commit but before its log line moved rows it never reported.
    totals = relay_totals("\n".join(r.log() for r in [*relays, last]))
    assert totals["moved"] <= len(committed)
    print(
        f"\n{len(committed)} committed, {len(rolled_back)} rolled back, {KILLS} kills, "
        f"{totals['duplicates']} replayed rows reported as duplicates"
    )


def test_worker_runs_the_relay_beside_it_and_stops_it_on_sigterm(
    harness: Harness, tmp_path: Path
) -> None:
    h = harness
    url = f"sqlite:///{tmp_path / 'app.db'}"
    done = h.run_cli("migrate", "--outbox", url)
    assert done.returncode == 0 and "outbox table ready" in done.stdout, done.stderr
    box = outbox_for_url(url)
    write, close = transaction_runner(box)
    write([quick_job("beside-1", 1), quick_job("beside-2", 2)], True)
    write([quick_job("never", 3)], False)
    close()
    worker = h.start_worker("--relay-from", url)
    worker.wait_log("relay started")
    wait_for(lambda: len(h.events(event="end")) >= 2, timeout=20, what="the relayed jobs to run")
    assert {e["job_id"] for e in h.events(event="end")} == {"beside-1", "beside-2"}
    worker.send(signal.SIGTERM)
    assert worker.wait_exit(30) == 0, worker.log()
    log = worker.log()
    assert "relay stopped" in log and "worker stopped" in log
    assert log.index("relay stopped") < log.index("worker stopped")
    assert h.queue.get("never") is None


def test_relay_command_stops_gracefully(harness: Harness, tmp_path: Path) -> None:
    h = harness
    url = f"sqlite:///{tmp_path / 'app.db'}"
    relay = start_relay(h, url, "--to", h.url)
    relay.wait_log("relay started")
    box = outbox_for_url(url)
    write, close = transaction_runner(box)  # the relay created the table
    write([quick_job("by-cli", 1)], True)
    close()
    wait_for(lambda: h.queue.get("by-cli"), timeout=20, what="the job in Redis")
    relay.send(signal.SIGTERM)
    assert relay.wait_exit(20) == 0
    assert "relay stopped" in relay.log()
    missing = h.run_cli("relay")
    assert missing.returncode == 2 and "--from" in missing.stderr
