"""Conveyor on PostgreSQL as an extra PostgreSQL peer of the shared runner.

A wrapper around bench/peer_conveyor.py (same job, same handler, same enqueue calls) that only
chooses the URL and declares `"backend": "postgres"`, so the runner treats it exactly as it treats
procrastinate and pgqueuer: a throwaway database `bench_<tag>_conveyor` dropped and re-created
before each enqueue mode, `schema` run on it, its URL passed to every command and to the worker
as BENCH_PG_URL, PostgreSQL CPU read from /proc during the drain, the database dropped at the end.

URL: BENCH_PG_URL (the runner's throwaway database) as a postgresql:// URL, with
BENCH_PG_CONVEYOR_QUERY appended when set (e.g. `schema=conveyor`). BENCH_PG_CONVEYOR_URL
overrides it: `sqlite` = a stand-in SQLite file per throwaway database under .bench/run/ (to
check the pipeline while no PostgreSQL backend exists; the report marks such a row), any other
value is used as is.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from urllib.parse import urlparse

import benchlib as B


def _url() -> str:
    override = os.environ.get("BENCH_PG_CONVEYOR_URL", "")
    dbname = urlparse(B.PG_URL).path.lstrip("/") or "postgres"
    if override == "sqlite":
        run_dir = Path(__file__).resolve().parent.parent / ".bench" / "run"
        run_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{run_dir / f'standin-{dbname}.db'}"
    if override:
        return override
    url = "postgresql://" + B.PG_URL.split("://", 1)[1]
    query = os.environ.get("BENCH_PG_CONVEYOR_QUERY", "")
    return url + ("&" if "?" in url else "?") + query if query else url


# peer_conveyor reads its URL at import time
os.environ["BENCH_CONVEYOR_URL"] = _url()

import peer_conveyor as P  # noqa: E402

worker = P.worker  # the worker command imports this module, so that the URL above is used


def info() -> dict[str, object]:
    d = dict(P.info())
    d["peer"] = "conveyor"
    d["backend"] = "postgres"
    d["url"] = P.URL  # trust authentication on a private server: no password in it
    argv = [a for a in d["worker_argv"] if isinstance(a, str)]  # type: ignore[union-attr]
    # no --url: the worker imports this module, which takes the URL from its BENCH_PG_URL
    i = argv.index("--url")
    del argv[i : i + 2]
    d["worker_argv"] = [
        "peer_conveyor_pg:worker" if a == "peer_conveyor:worker" else a for a in argv
    ]
    d["psycopg"] = _dist("psycopg")
    return d


def _dist(name: str) -> str | None:
    try:
        return B.dist_version(name)
    except Exception:
        return None


def enqueue(mode: str, n: int) -> float | None:
    # Unlike peer_conveyor.enqueue, never empties a SQLite stand-in here: the runner calls
    # `schema` on a new database before each mode, and the churn test enqueues while its
    # worker runs on the same store.
    return asyncio.run(P._timed(lambda: B.async_enqueue(mode, n, P._one, P._many)))


def latency(n: int, interval: float) -> float | None:
    return P.latency(n, interval)


def schema() -> None:
    """Create Conveyor's tables in the new database (what the first connect does anyway)."""
    P.fresh_sqlite_file()  # stand-in only: the database was just re-created, so the file too

    async def main() -> None:
        await P.queue.connect()
        await P.queue.close()

    asyncio.run(main())


if __name__ == "__main__":
    B.cli(info, enqueue, latency, schema=schema)
