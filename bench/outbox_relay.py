"""The outbox relay's throughput and lag, on private Redis and PostgreSQL servers (and a SQLite
file): ``.venv/bin/python bench/outbox_relay.py [N]``.

* drain: N committed rows waiting, one relay (batch 500): rows moved per second;
* stream: a producer commits one job per transaction, 200 a second, while the relay runs:
  the lag of each batch (the age of its oldest row when moved), median and worst.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.servers.postgres_server import PostgresServer
from tests.servers.redis_server import RedisServer

from conveyor.drivers.records import NewJob
from conveyor.drivers.transactional import Statement, run_plan
from conveyor.outbox import Outbox, PostgresOutbox, Relay, SQLiteOutbox, outbox_for_url


def jobs(prefix: str, n: int) -> list[NewJob]:
    return [
        NewJob(id=f"{prefix}-{i}", queue="bench", name="bench.job", payload=b'{"n":%d}' % i)
        for i in range(n)
    ]


class Writer:
    """Runs plans on a connection of the application's kind."""

    def __init__(self, box: Outbox) -> None:
        self.box = box
        if isinstance(box, SQLiteOutbox):
            self.lite = sqlite3.connect(box.path, isolation_level=None, timeout=30)
        else:
            assert isinstance(box, PostgresOutbox)
            self.pg = psycopg.connect(box.conninfo)

    def commit(self, batch: list[NewJob]) -> None:
        if isinstance(self.box, SQLiteOutbox):
            self.lite.execute("BEGIN IMMEDIATE")
            run_plan(self.box.insert_plan(batch), self._lite)
            self.lite.execute("COMMIT")
        else:
            run_plan(self.box.insert_plan(batch), self._pg)
            self.pg.commit()

    def _lite(self, s: Statement) -> list[tuple[object, ...]]:
        return self.lite.execute(s.sql, s.params).fetchall()

    def _pg(self, s: Statement) -> list[tuple[object, ...]]:
        cursor = self.pg.execute(s.sql.encode(), s.params)
        return cursor.fetchall() if cursor.description else []


class Lags(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lags: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        lag = getattr(record, "lag_ms", None)
        if lag is not None:
            self.lags.append(float(lag))


async def drain(box: Outbox, redis_url: str, n: int) -> float:
    writer = Writer(box)
    for start in range(0, n, 1000):
        writer.commit(jobs(f"d{start}", min(1000, n - start)))
    relay = Relay(box, redis_url)
    started = time.perf_counter()
    task = asyncio.create_task(relay.run())
    while relay.stats.moved < n:
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    relay.stop()
    await task
    return n / elapsed


async def stream(box: Outbox, redis_url: str, seconds: float, rate: float) -> list[float]:
    handler = Lags()
    logger = logging.getLogger("conveyor.relay")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    relay = Relay(box, redis_url)
    task = asyncio.create_task(relay.run())
    await asyncio.sleep(0.5)
    done = threading.Event()

    def produce() -> None:
        writer = Writer(box)
        n = 0
        start = time.monotonic()
        while not done.is_set():
            writer.commit(jobs(f"s{n}", 1))
            n += 1
            pause = start + n / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)

    producer = threading.Thread(target=produce)
    producer.start()
    await asyncio.sleep(seconds)
    done.set()
    producer.join()
    await asyncio.sleep(1.0)
    relay.stop()
    await task
    logger.removeHandler(handler)
    return handler.lags


async def main(n: int) -> None:
    with RedisServer() as redis_server, PostgresServer() as pg_server:
        folder = tempfile.mkdtemp()
        for label, url in (
            ("postgresql", pg_server.url + "?schema=bench"),
            ("sqlite", f"sqlite:///{os.path.join(folder, 'app.db')}"),
        ):
            box = outbox_for_url(url)
            if isinstance(box, SQLiteOutbox):  # as the README advises for the app's database
                sqlite3.connect(box.path).execute("PRAGMA journal_mode=WAL").close()
            box.ensure_schema()
            rate = await drain(box, redis_server.url + f"?prefix=drain-{label}", n)
            lags = await stream(box, redis_server.url + f"?prefix=stream-{label}", 5.0, 200.0)
            print(
                f"{label:10}  drain {rate:8.0f} rows/s   stream lag per batch: median "
                f"{statistics.median(lags):6.1f} ms, p95 "
                f"{sorted(lags)[int(len(lags) * 0.95)]:6.1f} ms, max {max(lags):6.1f} ms "
                f"({len(lags)} batches)"
            )


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000))
