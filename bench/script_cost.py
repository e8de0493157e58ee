"""Redis time per job of the fetch and finish scripts, this tree's against another's, alternated.

The no-op drain (bench/noop_drain.py) measures the whole worker, whose own CPU and scheduling
move the Redis figures by more than a script change does on a loaded machine. This drives the
two scripts alone, the way a worker does (lease ``--batch`` jobs, complete them, again), on a
private redis-server (tests/servers/redis_server.py, never 6379), and reads their time from
``INFO commandstats``: fetch is sent as EVALSHA and finish as EVAL, so the two are counted
apart. Each round drains ``--jobs`` fresh jobs once with each tree's scripts, in alternating
order; medians over the rounds are printed, and the ratio of each round's pair.

    .venv/bin/python bench/script_cost.py --baseline /path/to/other/src --rounds 5

Times on a loaded machine move by ±50 % between identical rounds. For a figure the load does
not move, count the server's instructions: start a private redis-server under callgrind
(``valgrind --tool=callgrind --callgrind-out-file=DIR/cg.%p.%n redis-server --port P --save ""
--appendonly no``) and pass ``--url redis://127.0.0.1:P/0 --callgrind DIR``: each drain is
bracketed by ``callgrind_control -z`` and ``-d``, and its instructions per job are printed.

``--baseline`` is a ``src`` directory of another checkout (``git archive <rev> src | tar -x``),
``--this`` another one to measure in place of this checkout's. Both trees' scripts must take
the same KEYS and ARGV (rows are read as ``{id, JOB_FIELDS values}``, or as ``{id, flat field
pairs}``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pydantic import BaseModel
from tests.servers.redis_server import RedisServer

from conveyor import Queue, job
from conveyor.backends.redis import _lua, _stubs
from conveyor.backends.redis._keys import QueueKeys
from conveyor.backends.redis._records import JOB_FIELDS

QUEUE = "cost"
TOKEN_AT = 1 + JOB_FIELDS.index("t")
T = TypeVar("T")


class Noop(BaseModel):
    n: int = 0


noop = job("bench.noop", Noop, result=None, queue=QUEUE)


def source(src: Path, name: str) -> str:
    """Script ``name`` of the tree at ``src``, its includes spliced in as _lua.load does."""
    lua = src / "conveyor" / "backends" / "redis" / "lua"
    text = (lua / f"{name}.lua").read_text()
    return re.sub(
        r"^--!include (\S+)$",
        lambda m: (lua / "includes" / m[1]).read_text().rstrip("\n"),
        text,
        flags=re.MULTILINE,
    )


def token_of(row: list[Any]) -> bytes:
    if len(row) == 2 and isinstance(row[1], list):  # id, flat field pairs
        pairs = row[1]
        return next(pairs[i + 1] for i in range(0, len(pairs), 2) if pairs[i] == b"t")
    return bytes(row[TOKEN_AT])


async def enqueue(url: str, n: int) -> None:
    async with Queue.from_url(url) as queue:
        for i in range(0, n, 1000):
            await queue.enqueue_many([noop.request(Noop(n=j)) for j in range(i, min(n, i + 1000))])


def drain(r: redis.Redis, fetch_sha: str, finish_src: str, batch: int) -> int:
    keys = QueueKeys("conveyor", QUEUE)
    finish_keys = _stubs.script_keys_of(keys, _lua.load("job_finish_many"))
    done = 0
    while True:
        call = _stubs.fetch_call(
            keys, now=None, limit=batch, lease_seconds=30.0, worker_id="w",
            promote_budget=100, receipt_ttl=60.0,
        )  # fmt: skip
        reply = r.evalsha(fetch_sha, len(call.keys), *call.keys, *call.args)
        rows = reply[2]
        if not rows:
            return done
        args: list[Any] = ["", 1000, "cancelled", len(rows)]
        for row in rows:
            args += [row[0], token_of(row), "complete", "", "", "0.0"]
        statuses = r.eval(finish_src, len(finish_keys), *finish_keys, *args)
        assert all(s == b"ok" for s in statuses), statuses
        done += len(rows)


def instructions(dump_dir: Path, pid: int, before: set[Path]) -> int:
    """The instruction count of the callgrind dump of server ``pid`` made since ``before``."""
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    new = set(dump_dir.glob("*")) - before
    [dump] = new
    text = dump.read_text(errors="replace")
    match = re.search(r"^(?:summary|totals): (\d+)", text, re.MULTILINE)
    if match is None:
        raise SystemExit(f"no instruction count in {dump}")
    return int(match[1])


def measured(
    r: redis.Redis, callgrind: Path | None, run: Callable[[], int]
) -> tuple[int, dict[str, Any], float | None]:
    """Call ``run`` (it returns how many units, jobs or calls, it did) between a reset of the
    server's statistics and, under callgrind, a zeroed count: the units, ``INFO commandstats``
    after it, and the server's instructions per unit (None without callgrind)."""
    pid = int(r.info("server")["process_id"])
    before: set[Path] = set()
    if callgrind is not None:
        before = set(callgrind.glob("*"))
        subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
    r.config_resetstat()
    units = run()
    stats = r.info("commandstats")
    per_unit = None
    if callgrind is not None:
        per_unit = instructions(callgrind, pid, before) / units
    return units, stats, per_unit


def alternate(
    trees: dict[str, T], rounds: int, measure: Callable[[T], dict[str, float]], unit: str
) -> None:
    """Measure each tree once a round, in alternating order round by round, printing each
    result, then the medians and the ratio of each round's "this" to its "baseline"."""
    results: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for i in range(rounds):
        order = list(trees) if i % 2 == 0 else list(reversed(trees))
        for name in order:
            res = measure(trees[name])
            results[name].append(res)
            print(f"round {i + 1} {name:8} " + "  ".join(
                f"{k} {v:.2f}" for k, v in res.items()), flush=True)  # fmt: skip
    print(f"medians of {rounds} rounds, per {unit}:")
    for name in trees:
        med = {k: statistics.median(x[k] for x in results[name]) for k in results[name][0]}
        print(f"  {name:8} " + "  ".join(f"{k} {v:.2f}" for k, v in med.items()))
    for k in results["this"][0]:
        ratios = [t[k] / b[k] for t, b in zip(results["this"], results["baseline"], strict=True)]
        print(f"  this / baseline {k}: median {statistics.median(ratios):.3f} "
              f"(rounds: {', '.join(f'{x:.2f}' for x in ratios)})")  # fmt: skip


def one(
    r: redis.Redis, url: str, src: Path, jobs: int, batch: int, callgrind: Path | None
) -> dict[str, float]:
    r.flushdb()
    asyncio.run(enqueue(url, jobs))
    fetch_sha = r.script_load(source(src, "job_fetch"))
    finish_src = source(src, "job_finish_many")
    r.eval(finish_src, 0, "", "", "", 0)  # compiled once before the count (an empty batch)
    cpu: list[float] = []

    def run() -> int:
        cpu0 = r.info("cpu")
        done = drain(r, fetch_sha, finish_src, batch)
        cpu1 = r.info("cpu")
        cpu.append(sum(cpu1[k] - cpu0[k] for k in ("used_cpu_user", "used_cpu_sys")))
        return done

    done, stats, per_job = measured(r, callgrind, run)
    assert done == jobs, (done, jobs)
    res = {
        "fetch_us": stats["cmdstat_evalsha"]["usec"] / jobs,
        "finish_us": stats["cmdstat_eval"]["usec"] / jobs,
        "redis_cpu_us": cpu[0] * 1e6 / jobs,
    }
    if per_job is not None:
        res["k_instr"] = per_job / 1000
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", type=Path, required=True, help="src dir of the other tree")
    ap.add_argument("--this", type=Path, help="src dir to measure against it (default: this one)")
    ap.add_argument("--jobs", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--url", help="a private server of your own to use (it is FLUSHDBed)")
    ap.add_argument("--callgrind", type=Path, help="dump directory of a server under callgrind")
    args = ap.parse_args()
    this = args.this or _lua.LUA_DIR.parents[3]
    trees = {"baseline": args.baseline.resolve(), "this": this.resolve()}
    with contextlib.ExitStack() as stack:
        url = args.url or stack.enter_context(RedisServer()).url
        r = redis.Redis.from_url(url)
        alternate(
            trees,
            args.rounds,
            lambda src: one(r, url, src, args.jobs, args.batch, args.callgrind),
            "job, µs",
        )


if __name__ == "__main__":
    main()
