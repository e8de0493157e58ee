"""Redis memory per queued job, through each peer's own `enqueue` command.

For every peer: FLUSHDB the queue db, read `INFO memory` used_memory, run
`<peer> enqueue --mode bulk --n N` (single when the peer has no bulk mode) exactly as the
shared runner invokes it, read used_memory and DBSIZE again, FLUSHDB. Result:
(used_memory after - before) / N bytes per queued job, written as JSON.

Conveyor and bullmq (the reference of the memory target) get N = --n (1,000,000 by default),
the other peers --n-others (100,000): a per-job figure settles well before that, and their
single-mode producers would otherwise take many minutes.

Needs the private server of bench/run.py: BENCH_REDIS_URL / BENCH_STATS_URL point at it,
and it FLUSHDBs the queue db, which must never be done to a server we did not start.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import redis

# Peers measured with the large N: ours, and the reference of the memory target.
LARGE_N_PEERS = ("conveyor", "bullmq")
# Variants whose producer is the main row's (the shared README: "variants re-run the same
# producer code ... except taskiq-list whose broker differs"): same jobs, same memory.
SAME_PRODUCER = {
    "celery-threads": "celery",
    "huey-process": "huey",
    "rq-simple": "rq",
    "arq-fastpoll": "arq",
    # ours (bench/run.py): the same jobs; conveyor-sync's SyncQueue.enqueue_many writes what
    # queue.enqueue_many does
    "conveyor-noop": "conveyor",
    "conveyor-p2": "conveyor",
    "conveyor-noop-p2": "conveyor",
    "conveyor-sync": "conveyor",
    "bullmq-node-noop": "bullmq-node",
}
ENQUEUE_TIMEOUT_S = 3600  # 1M jobs through a slow producer is minutes, not hours


@dataclass(frozen=True)
class Peer:
    id: str
    python: str
    module: str  # a module name in the peers folder, or an absolute file path
    variant: str


def load_runner(peers_dir: Path) -> ModuleType:
    """The shared runner.py, for its peer table and its way of calling a peer command.

    Importing it is side-effect free (it only defines things; main() is guarded), and using
    its call() means each enqueue runs with exactly the suite's env, cwd and PYTHONPATH.
    """
    sys.path.insert(0, str(peers_dir))  # runner.py imports benchlib from there
    spec = importlib.util.spec_from_file_location("bench_shared_runner", peers_dir / "runner.py")
    if spec is None or spec.loader is None:
        sys.exit(f"cannot load {peers_dir / 'runner.py'}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_extra(spec: str) -> Peer:
    # same format as the runner's --extra-peer / BENCH_EXTRA_PEERS: ID=PYTHON:FILE[:VARIANT]
    pid, rest = spec.split("=", 1)
    python, module, *variant = rest.split(":")
    return Peer(
        pid, os.path.abspath(python), os.path.abspath(module), variant[0] if variant else ""
    )


def select_peers(runner: ModuleType, only: set[str], extra: list[str]) -> list[Peer]:
    # Redis memory: the PostgreSQL and SQLite peers of the shared table store nothing there.
    elsewhere = {*getattr(runner, "PG_PEER_IDS", ()), *getattr(runner, "SQLITE_PEER_IDS", ())}
    table = [
        Peer(p[0], p[1], p[2], p[3])
        for p in runner.PEERS
        if p[0] not in elsewhere and p[1] not in {runner.PY_PG, runner.PY_SQLITE}
    ]
    table += [parse_extra(s) for s in extra]
    wanted = [p for p in table if not only or p.id in only or p.id in LARGE_N_PEERS]
    # conveyor first: if the run is cut short, the figure we care most about is in
    wanted.sort(key=lambda p: (p.id != "conveyor", p.id != "bullmq"))
    return wanted


def used_memory(r: redis.Redis) -> int:
    return int(r.info("memory")["used_memory"])


def enqueue_once(
    runner: ModuleType, r: redis.Redis, peer: Peer, mode: str, n: int
) -> dict[str, Any]:
    r.flushdb()
    before = used_memory(r)
    t = time.perf_counter()
    res: dict[str, Any] = runner.call(
        peer.python, peer.module, peer.variant,
        ["enqueue", "--mode", mode, "--n", str(n)], timeout=ENQUEUE_TIMEOUT_S,
    )  # fmt: skip
    wall = time.perf_counter() - t
    after, keys = used_memory(r), int(r.dbsize())
    r.flushdb()
    if "error" in res or res.get("unsupported"):
        return res
    return {
        "mode": mode,
        "n": n,
        "used_memory_before": before,
        "used_memory_after": after,
        "dbsize": keys,
        "bytes_per_job": (after - before) / n,
        "keys_per_job": keys / n,
        "enqueue_rate": res.get("rate"),
        "wall_s": wall,
    }


def measure(runner: ModuleType, r: redis.Redis, peer: Peer, n: int) -> dict[str, Any]:
    res = enqueue_once(runner, r, peer, "bulk", n)
    if res.get("unsupported"):  # no bulk API: one call at a time
        res = enqueue_once(runner, r, peer, "single", n)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peers-dir", type=Path, required=True)
    ap.add_argument("--n", type=int, default=1_000_000, help="jobs for conveyor and bullmq")
    ap.add_argument("--n-others", type=int, default=100_000, help="jobs for the other peers")
    ap.add_argument("--only", default="", help="comma-separated peer ids (default: all)")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()

    runner = load_runner(a.peers_dir.resolve())
    extra = [x for x in os.environ.get("BENCH_EXTRA_PEERS", "").split(";") if x]
    peers = select_peers(runner, {x for x in a.only.split(",") if x}, extra)
    r = redis.Redis.from_url(runner.B.REDIS_URL)
    out: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "redis_url": runner.B.REDIS_URL,
        "redis_version": r.info("server")["redis_version"],
        "peers": {},
    }
    ids = {p.id for p in peers}
    for peer in peers:
        main_row = SAME_PRODUCER.get(peer.id)
        if main_row in ids:
            out["peers"][peer.id] = {"same_producer_as": main_row}
            continue
        n = a.n if peer.id in LARGE_N_PEERS else a.n_others
        res = measure(runner, r, peer, n)
        out["peers"][peer.id] = res
        a.out.write_text(json.dumps(out, indent=1))  # keep partial results if interrupted
        if "bytes_per_job" in res:
            shown = f"{res['bytes_per_job']:.0f} B/job ({res['mode']}, n={n:,})"
        else:  # the error's last line is the exception
            shown = "failed: " + str(res.get("error", res)).strip().splitlines()[-1]
        print(f"[memory] {peer.id}: {shown}", flush=True)
    out["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    a.out.write_text(json.dumps(out, indent=1))
    print("wrote", a.out, flush=True)


if __name__ == "__main__":
    main()
