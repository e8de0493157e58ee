"""How big a SQLite file gets when jobs churn through it: the file's size and free pages after
each chunk of jobs went through, up to --total jobs.

    .venv/bin/python bench/sqlite_growth.py --dir "$(mktemp -d)" [--total 1000000] [--chunk 50000]

Each chunk is enqueued in bulk (a backlog of --chunk jobs, as the shared scale test's fill),
then leased and completed 100 at a time through the driver, as a worker does, with the default
retention (the newest 1,000 completed jobs kept); a maintenance step (prune, and the bounded
incremental vacuum) runs every --tick jobs finished, as the maintenance leader does every few
seconds. Prints one line per checkpoint and the ratio the issue's target names: size after
1,000,000 jobs / size after 300,000.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import time
from pathlib import Path

from conveyor.backends.sqlite import SQLiteDriver
from conveyor.drivers.records import FetchParams, FinishJob, NewJob, Retention, TransitionKind

PAYLOAD = b'{"ts": 0.0}'


def pages(path: Path) -> tuple[int, int]:
    with sqlite3.connect(path) as conn:
        return (
            conn.execute("PRAGMA page_count").fetchone()[0],
            conn.execute("PRAGMA freelist_count").fetchone()[0],
        )


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--total", type=int, default=1_000_000)
    ap.add_argument("--chunk", type=int, default=50_000)
    ap.add_argument("--tick", type=int, default=5_000, help="jobs finished per maintenance step")
    a = ap.parse_args()
    path = Path(a.dir) / "growth.db"
    driver = SQLiteDriver(f"sqlite:///{path}")
    await driver.open()
    params = FetchParams(("q",), 100, "w", 30.0)
    retention = Retention()
    done = 0
    sizes: dict[int, int] = {}
    started = time.perf_counter()
    print(f"load average {os.getloadavg()}")
    print("jobs through | file KiB | pages | free pages | s")
    try:
        while done < a.total:
            for first in range(done, done + a.chunk, 1000):
                jobs = [
                    NewJob(id=f"j{i}", queue="q", name="noop", payload=PAYLOAD)
                    for i in range(first, first + 1000)
                ]
                await driver.job_insert_many(jobs)
            since_tick = 0
            while leased := await driver.job_fetch(params):
                finishes = [
                    FinishJob(j.id, j.lease_token or "", TransitionKind.COMPLETE) for j in leased
                ]
                await driver.job_finish_many(finishes, retention=retention)
                since_tick += len(leased)
                if since_tick >= a.tick:
                    await driver.job_prune_finished(retention, limit=1000)
                    since_tick = 0
            await driver.job_prune_finished(retention, limit=1000)
            done += a.chunk
            count, free = pages(path)
            size = count * 4  # KiB: pages of 4 KiB, the WAL's included (what a checkpoint leaves)
            sizes[done] = size
            print(
                f"{done:,} | {size:,} | {count:,} | {free:,} | {time.perf_counter() - started:.0f}"
            )
    finally:
        await driver.close()
    if 300_000 in sizes and 1_000_000 in sizes:
        print(f"size after 1,000,000 / after 300,000: {sizes[1_000_000] / sizes[300_000]:.3f}")
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    asyncio.run(main())
