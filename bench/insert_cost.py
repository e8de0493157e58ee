"""Redis cost of one single-job insert (``job_insert_many``), this tree's against another's.

A single enqueue, SyncQueue's enqueue and the idle latency each pay one insert call of one job:
priority 0, no delay, no dedup key, group or headers, a new id, the server's clock. This sends
that call ``--calls`` times (fresh ids, as the driver sends it: EVALSHA, 13 keys, 14
arguments) with each tree's script, in alternating order round by round, on a private
redis-server, and prints the server's time per call from ``INFO commandstats``; beside it, a
script that only returns (same keys and arguments), the floor any script call pays.

    .venv/bin/python bench/insert_cost.py --baseline /path/to/other/src --rounds 3

Times move by ±50 % on a loaded machine. For a figure the load does not move, run the server
under callgrind as ``script_cost.py`` describes (``--url`` and ``--callgrind DIR``): each run is
bracketed by ``callgrind_control -z`` and ``-d`` and its instructions per call are printed.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.script_cost import instructions, source
from tests.servers.redis_server import RedisServer

from conveyor.backends.redis import _lua, _stubs
from conveyor.backends.redis._keys import QueueKeys

QUEUE = "cost"
PAYLOAD = '{"n":0}'
FLOOR = "return 1"


def calls(r: redis.Redis, sha: str, keys: tuple[str, ...], start: int, count: int) -> None:
    for i in range(start, start + count):
        args = ["", 1, f"job-{i:08d}", "bench.noop", PAYLOAD, 0, 25, "", 0.0, "", "", "", "", ""]
        reply = r.evalsha(sha, len(keys), *keys, *args)
        assert reply == [b"queued"] or sha == FLOOR_SHA, reply


FLOOR_SHA = ""


def one(r: redis.Redis, src: Path | None, count: int, callgrind: Path | None) -> dict[str, float]:
    """Run ``count`` single inserts with the script of ``src`` (None: the floor script)."""
    global FLOOR_SHA
    r.flushdb()
    keys = _stubs.script_keys_of(QueueKeys("conveyor", QUEUE), _lua.load("job_insert_many"))
    if src is None:
        sha = FLOOR_SHA = r.script_load(FLOOR)
    else:
        sha = r.script_load(source(src, "job_insert_many"))
    calls(r, sha, keys, 0, 10)  # compiled and warmed before the count
    pid = int(r.info("server")["process_id"])
    before: set[Path] = set()
    if callgrind is not None:
        before = set(callgrind.glob("*"))
        subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
    r.config_resetstat()
    calls(r, sha, keys, 10, count)
    stats = r.info("commandstats")
    res = {"evalsha_us": stats["cmdstat_evalsha"]["usec"] / count}
    if callgrind is not None:
        res["k_instr"] = instructions(callgrind, pid, before) / count / 1000
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", type=Path, required=True, help="src dir of the other tree")
    ap.add_argument("--this", type=Path, help="src dir to measure against it (default: this one)")
    ap.add_argument("--calls", type=int, default=2_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--url", help="a private server of your own to use (it is FLUSHDBed)")
    ap.add_argument("--callgrind", type=Path, help="dump directory of a server under callgrind")
    args = ap.parse_args()
    this = args.this or _lua.LUA_DIR.parents[3]
    trees: dict[str, Path | None] = {
        "baseline": args.baseline.resolve(), "this": this.resolve(), "floor": None,
    }  # fmt: skip
    results: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    with contextlib.ExitStack() as stack:
        url = args.url or stack.enter_context(RedisServer()).url
        r = redis.Redis.from_url(url)
        for i in range(args.rounds):
            order = list(trees) if i % 2 == 0 else list(reversed(trees))
            for name in order:
                res = one(r, trees[name], args.calls, args.callgrind)
                results[name].append(res)
                print(f"round {i + 1} {name:8} " + "  ".join(
                    f"{k} {v:.2f}" for k, v in res.items()), flush=True)  # fmt: skip
    print(f"medians of {args.rounds} rounds, per call:")
    for name in trees:
        med = {k: statistics.median(x[k] for x in results[name]) for k in results[name][0]}
        print(f"  {name:8} " + "  ".join(f"{k} {v:.2f}" for k, v in med.items()))
    for k in results["this"][0]:
        ratios = [t[k] / b[k] for t, b in zip(results["this"], results["baseline"], strict=True)]
        print(f"  this / baseline {k}: median {statistics.median(ratios):.3f} "
              f"(rounds: {', '.join(f'{x:.2f}' for x in ratios)})")  # fmt: skip


if __name__ == "__main__":
    main()
