"""Redis cost of the calls an idle worker's loop sends, this tree's against another's.

A single enqueue, SyncQueue's enqueue and the idle latency each pay one insert call of one job
(``--case insert``): priority 0, no delay, no dedup key, group or headers, a new id, the
server's clock. The worker's side pays one lease of one job (``--case fetch-idle``: of an empty
queue, what a waiting worker sends; ``--case fetch-one``: of a queue with jobs, one at a time,
each call forgetting the receipt of the one before, as the driver sends them). This sends that
call ``--calls`` times (EVALSHA, with the driver's keys and arguments) with each tree's script,
in alternating order round by round, on a private redis-server, and prints the server's time
per call from ``INFO commandstats``; beside it, a script that only returns (same keys and
arguments), the floor any script call pays.

    .venv/bin/python bench/insert_cost.py --baseline /path/to/other/src --rounds 3
    .venv/bin/python bench/insert_cost.py --baseline /path/to/other/src --case fetch-idle

Times move by ±50 % on a loaded machine. For a figure the load does not move, run the server
under callgrind as ``script_cost.py`` describes (``--url`` and ``--callgrind DIR``): each run is
bracketed by ``callgrind_control -z`` and ``-d`` and its instructions per call are printed.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.script_cost import alternate, measured, source
from tests.servers.redis_server import RedisServer

from conveyor.backends.redis import _lua, _stubs
from conveyor.backends.redis._keys import QueueKeys

QUEUE = "cost"
KEYS = QueueKeys("conveyor", QUEUE)
PAYLOAD = '{"n":0}'
FLOOR = "return 1"
SCRIPTS = {"insert": "job_insert_many", "fetch-idle": "job_fetch", "fetch-one": "job_fetch"}

# A case's call: (sha, the call's number, whether the script is the floor) -> its reply checked.
Caller = Callable[[redis.Redis, str, int, bool], None]


def insert(r: redis.Redis, sha: str, i: int, floor: bool) -> None:
    keys = _stubs.script_keys_of(KEYS, _lua.load("job_insert_many"))
    args = ["", 1, f"job-{i:08d}", "bench.noop", PAYLOAD, 0, 25, "", 0.0, "", "", "", "", ""]
    reply = r.evalsha(sha, len(keys), *keys, *args)
    assert floor or reply == [b"queued"], reply


def fetcher(leases: bool) -> Caller:
    previous: list[str | None] = [None]

    def fetch(r: redis.Redis, sha: str, i: int, floor: bool) -> None:
        call = _stubs.fetch_call(
            KEYS, now=None, limit=1, lease_seconds=30.0, worker_id="w", promote_budget=100,
            receipt_ttl=60.0, previous_receipt=previous[0],
        )  # fmt: skip
        reply: Any = r.evalsha(sha, len(call.keys), *call.keys, *call.args)
        if not floor:
            assert len(reply[2]) == (1 if leases else 0), reply
        previous[0] = call.receipt if leases else None

    return fetch


def one(
    r: redis.Redis, case: str, src: Path | None, count: int, callgrind: Path | None
) -> dict[str, float]:
    """Send ``count`` calls of ``case`` with the script of ``src`` (None: the floor script)."""
    r.flushdb()
    call: Caller = insert if case == "insert" else fetcher(case == "fetch-one")
    if case == "fetch-one":  # a job for each call, the ten warming ones included
        insert_sha = r.script_load(_lua.load("job_insert_many").source)
        for i in range(count + 10):
            insert(r, insert_sha, i, False)
    sha = r.script_load(FLOOR if src is None else source(src, SCRIPTS[case]))
    for i in range(10):  # compiled and warmed before the count
        call(r, sha, i, src is None)

    def run() -> int:
        for i in range(10, 10 + count):
            call(r, sha, i, src is None)
        return count

    _, stats, per_call = measured(r, callgrind, run)
    res = {"evalsha_us": stats["cmdstat_evalsha"]["usec"] / count}
    if per_call is not None:
        res["k_instr"] = per_call / 1000
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", type=Path, required=True, help="src dir of the other tree")
    ap.add_argument("--this", type=Path, help="src dir to measure against it (default: this one)")
    ap.add_argument("--case", choices=list(SCRIPTS), default="insert")
    ap.add_argument("--calls", type=int, default=2_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--url", help="a private server of your own to use (it is FLUSHDBed)")
    ap.add_argument("--callgrind", type=Path, help="dump directory of a server under callgrind")
    args = ap.parse_args()
    this = args.this or _lua.LUA_DIR.parents[3]
    trees: dict[str, Path | None] = {
        "baseline": args.baseline.resolve(), "this": this.resolve(), "floor": None,
    }  # fmt: skip
    with contextlib.ExitStack() as stack:
        url = args.url or stack.enter_context(RedisServer()).url
        r = redis.Redis.from_url(url)
        alternate(
            trees, args.rounds, lambda src: one(r, args.case, src, args.calls, args.callgrind),
            "call",
        )  # fmt: skip


if __name__ == "__main__":
    main()
