"""Transactional enqueue on PostgreSQL: what enqueueing a job inside the application's own
transaction costs, against the application's write alone.

Runs in Conveyor's venv (conveyor + psycopg 3), against a database of the private cluster:

  row only:  async with conn.transaction(): await conn.execute("INSERT INTO app_row ...")
  row + job: async with conn.transaction():
                 await conn.execute("INSERT INTO app_row ...")
                 await queue.enqueue(txn_job, payload, job_id=..., connection=conn)

One psycopg.AsyncConnection (autocommit, so `transaction()` is BEGIN ... COMMIT), one
transaction at a time, awaited before the next. The queue is
`Queue.from_url("postgresql://...")` on the same database, connected first (so its tables
exist). ROUNDS rounds, each timing N transactions of each kind in blocks of BLOCK that take
turns (A B A B ...; which kind goes first alternates between rounds), so that the load changes of
a shared machine hit both kinds alike; the figure is the median over the rounds, the ratio the
median of the per-round ratios (row + job / row only).

Counted, apart from the timing, over TRACE_N (1,000) more transactions of each kind:
  * statements and round trips per transaction, from libpq's protocol trace of that connection
    (statements = Query + Execute messages sent; round trips = the times the client sent
    messages and then read the server's reply);
  * server transactions and inserted rows per transaction in that database
    (pg_stat_database xact_commit and tup_inserted), which would also show work the queue does on
    connections of its own.

    python bench/txn_pg.py --db-url postgresql://postgres@127.0.0.1:PORT/bench_txn --out x.json

Exits 3, with a message and a JSON saying why, when Conveyor cannot run it yet (no
`connection` parameter on Queue.enqueue, or no postgresql:// backend); `--baseline-only`
measures the row-only side anyway (to check the harness).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import pq
from pydantic import BaseModel

from conveyor import Queue, job

API_MISSING = 3

CREATE = (
    "CREATE TABLE IF NOT EXISTS app_row ("
    " id bigint PRIMARY KEY, name text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
)
INSERT = "INSERT INTO app_row (id, name) VALUES (%s, %s)"


class RowCreated(BaseModel):
    row_id: int


txn_job = job("bench.row_created", RowCreated, result=None, queue="bench_txn")


def api_problem(queue_url: str) -> str | None:
    """Why this Conveyor cannot run the measurement, or None."""
    if "connection" not in inspect.signature(Queue.enqueue).parameters:
        return (
            "Queue.enqueue has no `connection` parameter yet (transactional enqueue has not "
            "landed in this checkout): merge main once it has, then run again"
        )
    try:
        Queue.from_url(queue_url)
    except Exception as exc:
        return f"Queue.from_url({queue_url.split('?')[0]!r}) failed: {exc}"
    return None


# ------------------------------------------------------------------ the two transactions
class Bench:
    def __init__(self, conn: psycopg.AsyncConnection[Any], queue: Queue | None) -> None:
        self.conn = conn
        self.queue = queue
        self.next_id = 1
        self.tag = uuid.uuid4().hex[:8]

    async def row_only(self) -> None:
        i = self.next_id
        self.next_id += 1
        async with self.conn.transaction():
            await self.conn.execute(INSERT, (i, f"row {i}"))

    async def row_and_job(self) -> None:
        assert self.queue is not None
        i = self.next_id
        self.next_id += 1
        async with self.conn.transaction():
            await self.conn.execute(INSERT, (i, f"row {i}"))
            await self.queue.enqueue(  # type: ignore[call-arg]
                txn_job, RowCreated(row_id=i), job_id=f"{self.tag}-{i}", connection=self.conn
            )


async def timed(n: int, one: Callable[[], Awaitable[None]]) -> float:
    """Seconds taken by n transactions, one after the other."""
    t = time.perf_counter()
    for _ in range(n):
        await one()
    return time.perf_counter() - t


async def interleaved(
    n: int, block: int, kinds: dict[str, Callable[[], Awaitable[None]]], flip: bool
) -> dict[str, float]:
    """n transactions of each kind, in blocks of `block` taking turns (A B A B ..., or B A B A
    ... when `flip`), so that a change of load on the shared machine hits both kinds alike;
    returns jobs/s per kind over its own blocks."""
    order = list(reversed(kinds)) if flip else list(kinds)
    spent = dict.fromkeys(kinds, 0.0)
    done = 0
    while done < n:
        k = min(block, n - done)
        for name in order:
            spent[name] += await timed(k, kinds[name])
        done += k
    return {name: n / spent[name] for name in kinds}


# ------------------------------------------------------------------ counting
def parse_trace(text: str) -> tuple[int, int]:
    """(statements, round trips) in a libpq protocol trace.

    Each line is `[timestamp] F|B length MessageType ...`. Statements: Query (simple protocol)
    and Execute (extended) messages sent. Round trips: each run of sent messages that is
    followed by a message from the server.
    """
    statements = round_trips = 0
    sending = False
    for line in text.splitlines():
        fields = line.split("\t")
        if fields and fields[0] not in ("F", "B"):
            fields = fields[1:]  # timestamp first
        if len(fields) < 3:
            continue
        direction, kind = fields[0], fields[2].split(" ")[0]
        if direction == "F":
            sending = True
            if kind in ("Query", "Execute"):
                statements += 1
        elif direction == "B" and sending:
            round_trips += 1
            sending = False
    return statements, round_trips


async def traced(
    conn: psycopg.AsyncConnection[Any], n: int, one: Callable[[], Awaitable[None]]
) -> tuple[int, int]:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "trace"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            conn.pgconn.trace(fd)
            conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
            for _ in range(n):
                await one()
        finally:
            conn.pgconn.untrace()  # flushes libpq's buffer
            os.close(fd)
        return parse_trace(path.read_text(errors="replace"))


async def db_counters(admin_url: str, dbname: str) -> tuple[int, int]:
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as c:
        await c.execute("SELECT pg_stat_clear_snapshot()")
        cur = await c.execute(
            "SELECT xact_commit, tup_inserted FROM pg_stat_database WHERE datname = %s", (dbname,)
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def flush_stats(conn: psycopg.AsyncConnection[Any]) -> None:
    """Make this backend publish its pending statistics when it goes idle (PostgreSQL 15+)."""
    with_flush = conn.info.server_version >= 150000
    if with_flush:
        await conn.execute("SELECT pg_stat_force_next_flush()")
    await asyncio.sleep(0.3 if with_flush else 1.5)


async def counted(
    bench: Bench, admin_url: str, dbname: str, n: int, one: Callable[[], Awaitable[None]]
) -> dict[str, float]:
    await flush_stats(bench.conn)
    x0, t0 = await db_counters(admin_url, dbname)
    statements, trips = await traced(bench.conn, n, one)
    await flush_stats(bench.conn)
    x1, t1 = await db_counters(admin_url, dbname)
    # the flush statement itself is one committed transaction
    return {
        "transactions_traced": n,
        "statements_per_txn": statements / n,
        "round_trips_per_txn": trips / n,
        "server_xacts_per_txn": (x1 - x0 - 1) / n,
        "rows_inserted_per_txn": (t1 - t0) / n,
    }


# ------------------------------------------------------------------ main
async def measure(a: argparse.Namespace) -> dict[str, Any]:
    dbname = a.db_url.rsplit("/", 1)[1].split("?")[0]
    admin_url = a.db_url.rsplit("/", 1)[0] + "/postgres"
    queue = None if a.baseline_only else Queue.from_url(a.queue_url)
    if queue is not None:
        await queue.connect()
    conn = await psycopg.AsyncConnection.connect(a.db_url, autocommit=True)
    server_version = conn.info.server_version
    try:
        await conn.execute(CREATE)
        bench = Bench(conn, queue)
        kinds: dict[str, Callable[[], Awaitable[None]]] = {"row_only": bench.row_only}
        if queue is not None:
            kinds["row_and_job"] = bench.row_and_job
        for one in kinds.values():  # warm-up: connections, prepared statements, caches
            await timed(a.warmup, one)
        rounds: list[dict[str, float]] = []
        for r in range(a.rounds):
            rates = await interleaved(a.n, a.block, kinds, flip=r % 2 == 1)
            rounds.append(rates)
            print(
                f"[txn] round {r + 1}/{a.rounds}: "
                + ", ".join(f"{k} {v:,.0f}/s" for k, v in rates.items()),
                file=sys.stderr,
                flush=True,
            )
        counts = {
            k: await counted(bench, admin_url, dbname, a.trace_n, one) for k, one in kinds.items()
        }
    finally:
        await conn.close()
        if queue is not None:
            await queue.close()
    out: dict[str, Any] = {
        "n": a.n,
        "block": a.block,
        "rounds": rounds,
        "server_version": server_version,
        "counts": counts,
        "rate": {k: statistics.median(r[k] for r in rounds) for k in kinds},
    }
    if "row_and_job" in kinds:
        out["ratio"] = statistics.median(r["row_and_job"] / r["row_only"] for r in rounds)
        out["added_per_job"] = {
            k: counts["row_and_job"][k] - counts["row_only"][k]
            for k in counts["row_only"]
            if k != "transactions_traced"
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db-url", required=True, help="libpq URL of an existing bench_* database")
    ap.add_argument("--queue-url", help="Conveyor's URL (default: --db-url as postgresql://)")
    ap.add_argument("--n", type=int, default=5000, help="transactions per kind and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--block", type=int, default=100, help="transactions per turn of one kind")
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--trace-n", type=int, default=1000, help="transactions traced per kind")
    ap.add_argument("--baseline-only", action="store_true", help="row only (harness check)")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    a.queue_url = a.queue_url or "postgresql://" + a.db_url.split("://", 1)[1]
    base = {
        "db_url": a.db_url,
        "queue_url": a.queue_url,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if not a.baseline_only and (why := api_problem(a.queue_url)):
        a.out.write_text(json.dumps({**base, "skipped": why}, indent=1))
        print(f"txn_pg: cannot measure transactional enqueue: {why}", file=sys.stderr)
        return API_MISSING
    result = asyncio.run(measure(a))
    result = {**base, **result, "baseline_only": a.baseline_only}
    a.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
