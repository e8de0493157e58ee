"""`make bench-sqlite`: Conveyor on SQLite beside huey's SqliteHuey, as the shared run_sqlite.sh.

1. sync the shared peers folder into .bench/peers and build its `.venv-sqlite` (huey, and the
   redis-py the runner's accounting needs) from requirements-sqlite.txt, if missing;
2. start a private redis-server (the shared accounting: each handler's pipelined call);
3. run the shared runner.py BENCH_RUNS times with the SQLite rows (conveyor-sqlite,
   conveyor-sqlite-2w, conveyor-sqlite-full, huey-sqlite, huey-sqlite-process), each run in a
   fresh temporary directory, Conveyor through the shared peer_conveyor_sqlite.py (which uses
   this checkout's bench/peer_conveyor.py with this checkout's .venv);
4. the contention scenario (4 producer processes, 2 worker processes on one file) once;
5. print the report (bench/report_sqlite.py), also written to .bench/REPORT-sqlite.md.

The contention script is the shared sqlite_contention.py unless this checkout has its own
bench/sqlite_contention.py (or BENCH_SQLITE_CONTENTION_SCRIPT names one): it is run the same
way (`--dir DIR --n N --tag TAG`, in the peers copy with its modules importable) and must write
results/<TAG>.json in the shared format.

Stops everything it started at exit, on failure and on Ctrl-C/SIGTERM. Progress goes to stderr;
stdout carries only the report. Knobs (environment): see bench/README.md.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import run as R

MANIFEST = R.WORK / "last-run-sqlite.json"
SQLITE_VENV = (".venv-sqlite", "requirements-sqlite.txt")
SQLITE_PEERS = (
    "conveyor-sqlite",
    "conveyor-sqlite-2w",
    "conveyor-sqlite-full",
    "huey-sqlite",
    "huey-sqlite-process",
)
PEER_MODULE = "peer_conveyor_sqlite.py"  # in the shared folder: wraps bench/peer_conveyor.py
OWN_CONTENTION = R.BENCH / "sqlite_contention.py"


def log(msg: str) -> None:
    print(f"[bench-sqlite] {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class SqliteConfig:
    peers_src: Path
    peers: Path
    runs: int
    n: int
    only: tuple[str, ...]
    wait_load: float
    wait_load_max: float
    suite: bool
    contention: bool
    contention_n: int
    contention_script: Path

    @classmethod
    def from_env(cls) -> SqliteConfig:
        base = R.Config.from_env()
        raw = os.environ.get("BENCH_SQLITE_ONLY", ",".join(SQLITE_PEERS))
        only = tuple(x.strip() for x in raw.split(",") if x.strip())
        for pid in only:
            if pid not in SQLITE_PEERS:
                sys.exit(f"unknown SQLite peer {pid!r} (known: {', '.join(SQLITE_PEERS)})")
        script = os.environ.get("BENCH_SQLITE_CONTENTION_SCRIPT", "").strip()
        return cls(
            peers_src=base.peers_src,
            peers=base.peers,
            runs=base.runs,
            n=base.n,
            only=only,
            wait_load=R.env_float("BENCH_WAIT_LOAD", 1.2),
            wait_load_max=R.env_float("BENCH_WAIT_LOAD_MAX", 90),
            suite=os.environ.get("BENCH_SQLITE_SUITE", "1") != "0",
            contention=os.environ.get("BENCH_SQLITE_CONTENTION", "1") != "0",
            contention_n=R.env_int("BENCH_CONTENTION_N", 5000),
            contention_script=Path(script).resolve() if script else contention_script(base.peers),
        )


def contention_script(peers: Path) -> Path:
    """This checkout's own contention script when there is one, else the shared one."""
    return OWN_CONTENTION if OWN_CONTENTION.is_file() else peers / "sqlite_contention.py"


def prepare(cfg: SqliteConfig) -> None:
    R.WORK.mkdir(exist_ok=True)
    written = R.sync_peers(cfg.peers_src, cfg.peers)
    if written:
        log(f"copied {len(written)} file(s) from {cfg.peers_src} to {cfg.peers}")
    for name in ("run_sqlite.sh", PEER_MODULE, "peer_huey_sqlite.py", SQLITE_VENV[1]):
        if not (cfg.peers / name).is_file():
            sys.exit(f"{cfg.peers_src} has no {name}: the SQLite peers are not in that folder")
    R.ensure_venv(cfg.peers, *SQLITE_VENV)
    if not R.PYTHON.exists():
        sys.exit(f"{R.PYTHON} is missing: run `make venv` first")


def base_env(cfg: SqliteConfig, redis_port: int) -> dict[str, str]:
    env = dict(os.environ)
    env["BENCH_REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
    env["BENCH_STATS_URL"] = f"redis://127.0.0.1:{redis_port}/15"
    env["CONVEYOR_DIR"] = str(R.REPO)
    env["CONVEYOR_PY"] = str(R.PYTHON)
    peer = cfg.peers / PEER_MODULE
    env["BENCH_EXTRA_PEERS"] = ";".join(
        f"conveyor-sqlite{suffix}={R.PYTHON}:{peer}{variant}"
        for suffix, variant in (("", ""), ("-2w", ":2w"), ("-full", ":full"))
    )
    # A contention script of this checkout imports the peers copy's runner and benchlib.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(cfg.peers), env.get("PYTHONPATH")]))
    return env


def fresh_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="conveyor-bench-sqlite-"))


def run_suite(cfg: SqliteConfig, kids: R.Children, env: dict[str, str], stamp: str) -> list[Path]:
    results: list[Path] = []
    python = str(cfg.peers / SQLITE_VENV[0] / "bin" / "python")
    for i in range(1, cfg.runs + 1):
        tag = f"sqlite-conveyor-{stamp}-{i}"
        folder = fresh_dir()
        argv = [
            python,
            "runner.py",
            "--tag",
            tag,
            "--n",
            str(cfg.n),
            "--skip-raw",
            "--only",
            ",".join(cfg.only),
            "--sqlite-dir",
            str(folder),
            "--wait-load",
            str(cfg.wait_load),
            "--wait-load-max",
            str(cfg.wait_load_max),
        ]
        log(f"=== SQLite run {i}/{cfg.runs} ({tag}), load {os.getloadavg()[0]:.2f} ===")
        try:
            rc = kids.run(argv, cfg.peers, env)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        if rc != 0:
            log(f"runner exited rc={rc}; keeping what it wrote")
        path = cfg.peers / "results" / f"{tag}.json"
        if path.exists():
            results.append(path)
    return results


def run_contention(
    cfg: SqliteConfig, kids: R.Children, env: dict[str, str], stamp: str
) -> Path | None:
    tag = f"sqlite-contention-conveyor-{stamp}"
    folder = fresh_dir()
    argv = [
        str(cfg.peers / SQLITE_VENV[0] / "bin" / "python"),
        str(cfg.contention_script),
        "--dir",
        str(folder),
        "--n",
        str(cfg.contention_n),
        "--tag",
        tag,
    ]
    log(f"=== contention ({cfg.contention_script.name} from {cfg.contention_script.parent}) ===")
    try:
        rc = kids.run(argv, cfg.peers, env)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    path = cfg.peers / "results" / f"{tag}.json"
    if rc != 0:
        log(f"contention exited rc={rc}")
    return path if path.exists() else None


def main(argv: Sequence[str]) -> int:
    cfg = SqliteConfig.from_env()
    R.stop_on_signals()
    prepare(cfg)
    if "--setup-only" in argv:
        return 0
    stamp = time.strftime("%Y%m%d-%H%M%S")
    kids = R.Children(uuid.uuid4().hex)
    manifest: dict[str, object] = {"contention": None}
    ok = True
    with R.private_redis(R.WORK / "run", None) as redis_port:
        env = base_env(cfg, redis_port)
        try:
            results = run_suite(cfg, kids, env, stamp) if cfg.suite else []
            ok = len(results) == (cfg.runs if cfg.suite else 0)
            manifest["results"] = [str(p) for p in results]
            if cfg.contention:
                contention = run_contention(cfg, kids, env, stamp)
                ok = ok and contention is not None
                manifest["contention"] = str(contention) if contention else None
                manifest["contention_script"] = str(cfg.contention_script)
        finally:
            kids.stop_all()
    manifest["written"] = time.strftime("%Y-%m-%d %H:%M:%S")
    MANIFEST.write_text(json.dumps(manifest, indent=1))
    if R.run_report("report_sqlite.py", MANIFEST, R.WORK / "REPORT-sqlite.md") != 0:
        return 1
    if errors := R.conveyor_errors(results, variants=True):
        log("Conveyor's rows have errors: " + "; ".join(errors[:3]))
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        log("interrupted")
        sys.exit(130)
