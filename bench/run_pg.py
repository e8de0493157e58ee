"""`make bench-pg` / `make bench-churn`: Conveyor on PostgreSQL beside procrastinate and pgqueuer.

`make bench-pg` (this script without arguments):
1. sync the shared peers folder into .bench/peers and build its `.venv` (the runner) and
   `.venv-pg` (the PostgreSQL peers, pgadmin.py) as its run_pg.sh does, if missing;
   make sure Conveyor's venv (.venv) has psycopg;
2. start a private redis-server (the shared accounting) and a private PostgreSQL cluster
   (bench/pgcluster.py: initdb defaults, free port on 127.0.0.1, temporary directory);
3. run the shared runner.py BENCH_RUNS times with --pg-url on that cluster, procrastinate and
   pgqueuer, and Conveyor as an extra PostgreSQL peer (bench/peer_conveyor_pg.py);
4. the transactional-enqueue measurement (bench/txn_pg.py) in a bench_txn_* database;
5. print the report (bench/report_pg.py), also written to .bench/REPORT-pg.md.

`run_pg.py --txn-only`: steps 1-2, 4 and 5 (the last suite's results are kept in the report).

`make bench-churn` (`--churn`): the same set-up, then the shared dead-row churn test
(pg_churn.py, through bench/churn_pg.py) for Conveyor (and the peers named in
BENCH_CHURN_PEERS) on the private cluster, then the report with the churn table.

Both stop everything they started at exit, on failure and on Ctrl-C/SIGTERM. Progress goes to
stderr; stdout carries only the report. Knobs (environment): see bench/README.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pgcluster
import run as R

PEER_FILE = R.BENCH / "peer_conveyor_pg.py"
MANIFEST = R.WORK / "last-run-pg.json"
PG_VENVS = ((".venv", "requirements-main.txt"), (".venv-pg", "requirements-pg.txt"))
PG_PEERS = ("procrastinate", "pgqueuer")
TXN_SKIPPED = 3  # txn_pg.py's exit status when Conveyor cannot run it yet


def log(msg: str) -> None:
    print(f"[bench-pg] {msg}", file=sys.stderr, flush=True)


def id_list(name: str, default: str) -> tuple[str, ...]:
    raw = os.environ.get(name, default)
    return tuple(x.strip() for x in raw.split(",") if x.strip())


@dataclass(frozen=True)
class PgConfig:
    peers_src: Path
    peers: Path
    runs: int
    n: int
    only: tuple[str, ...]  # the PostgreSQL peers beside Conveyor
    wait_load: float
    wait_load_max: float
    txn: bool
    txn_n: int
    txn_rounds: int
    churn_peers: tuple[str, ...]
    churn_total: str
    churn_m: int
    churn_chunk: int
    pg_port: int | None

    @classmethod
    def from_env(cls) -> PgConfig:
        base = R.Config.from_env()
        only = id_list("BENCH_PG_ONLY", ",".join(PG_PEERS))
        churn_peers = id_list("BENCH_CHURN_PEERS", "conveyor")
        for pid in (*only, *churn_peers):
            if pid not in (*PG_PEERS, "conveyor"):
                sys.exit(
                    f"unknown PostgreSQL peer {pid!r} (known: {', '.join(PG_PEERS)}, conveyor)"
                )
        total = os.environ.get("BENCH_CHURN_TOTAL", "1000000").replace("_", "")
        if not all(x.strip().isdigit() for x in total.split(",")):
            sys.exit(f"BENCH_CHURN_TOTAL must be a comma list of integers, got {total!r}")
        port = R.env_int("BENCH_PG_PORT", 0) or None
        return cls(
            peers_src=base.peers_src,
            peers=base.peers,
            runs=base.runs,
            n=base.n,
            only=tuple(p for p in only if p != "conveyor"),
            wait_load=R.env_float("BENCH_WAIT_LOAD", 1.2),
            wait_load_max=R.env_float("BENCH_WAIT_LOAD_MAX", 90),
            txn=os.environ.get("BENCH_TXN", "1") != "0",
            txn_n=R.env_int("BENCH_TXN_N", 5000),
            txn_rounds=R.env_int("BENCH_TXN_ROUNDS", 3),
            churn_peers=churn_peers,
            churn_total=total,
            churn_m=R.env_int("BENCH_CHURN_M", 20000),
            churn_chunk=R.env_int("BENCH_CHURN_CHUNK", 50000),
            pg_port=port,
        )


# ------------------------------------------------------------------ set-up
def ensure_psycopg() -> None:
    """Conveyor's venv needs psycopg 3 for its PostgreSQL backend and for txn_pg.py."""
    probe = [str(R.PYTHON), "-c", "import psycopg, psycopg_pool"]
    if subprocess.run(probe, capture_output=True).returncode == 0:
        return
    pyproject = (R.REPO / "pyproject.toml").read_text()
    if "\npostgres = [" in pyproject:
        what = [f"{R.REPO}[postgres]"]
        argv = [str(R.PYTHON), "-m", "pip", "install", "-q", "-e", *what]
    else:  # before the extra existed: the psycopg the shared peers pin
        pins = [
            line.strip()
            for line in (R.WORK / "peers" / "requirements-pg.txt").read_text().splitlines()
            if line.startswith(("psycopg==", "psycopg-binary==", "psycopg-pool=="))
        ]
        argv = [str(R.PYTHON), "-m", "pip", "install", "-q", *pins]
    log("installing psycopg into Conveyor's venv: " + " ".join(argv[3:]))
    R.check_call(argv, R.REPO)


def prepare(cfg: PgConfig) -> None:
    R.WORK.mkdir(exist_ok=True)
    written = R.sync_peers(cfg.peers_src, cfg.peers)
    if written:
        log(f"copied {len(written)} file(s) from {cfg.peers_src} to {cfg.peers}")
    for name, requirements in PG_VENVS:
        R.ensure_venv(cfg.peers, name, requirements)
    if not R.PYTHON.exists():
        sys.exit(f"{R.PYTHON} is missing: run `make venv` first")
    ensure_psycopg()


def base_env(redis_port: int, admin_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["BENCH_REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
    env["BENCH_STATS_URL"] = f"redis://127.0.0.1:{redis_port}/15"
    env["BENCH_PG_URL"] = admin_url
    env["BENCH_EXTRA_PEERS"] = f"conveyor={R.PYTHON}:{PEER_FILE}"
    return env


def pgadmin(cfg: PgConfig, *args: str) -> str:
    cp = subprocess.run(
        [str(cfg.peers / ".venv-pg" / "bin" / "python"), str(cfg.peers / "pgadmin.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if cp.returncode:
        raise RuntimeError(f"pgadmin {args[0]}: {(cp.stderr or cp.stdout)[-800:]}")
    return cp.stdout


# ------------------------------------------------------------------ steps
def run_suite(
    cfg: PgConfig, kids: R.Children, env: dict[str, str], admin_url: str, stamp: str
) -> list[Path]:
    results: list[Path] = []
    python = str(cfg.peers / ".venv" / "bin" / "python")
    for i in range(1, cfg.runs + 1):
        tag = f"pg-conveyor-{stamp}-{i}"
        argv = [
            python,
            "runner.py",
            "--tag",
            tag,
            "--n",
            str(cfg.n),
            "--skip-raw",
            "--only",
            ",".join((*cfg.only, "conveyor")),
            "--pg-url",
            admin_url,
            "--wait-load",
            str(cfg.wait_load),
            "--wait-load-max",
            str(cfg.wait_load_max),
        ]
        log(f"=== PostgreSQL run {i}/{cfg.runs} ({tag}) ===")
        rc = kids.run(argv, cfg.peers, env)
        if rc != 0:
            log(f"runner exited rc={rc}; keeping what it wrote")
        path = cfg.peers / "results" / f"{tag}.json"
        if path.exists():
            results.append(path)
    return results


def run_txn(
    cfg: PgConfig, kids: R.Children, env: dict[str, str], cluster: pgcluster.Cluster, stamp: str
) -> tuple[Path, bool]:
    """(the JSON written, whether the step is fine: measured, or skipped for a missing API)."""
    out = R.WORK / f"txn-pg-{stamp}.json"
    dbname = f"bench_txn_{stamp.replace('-', '_')}"
    db_url = f"postgresql://postgres@127.0.0.1:{cluster.port}/{dbname}"
    log("=== transactional enqueue ===")
    pgadmin(cfg, "recreate", cluster.admin_url, dbname)
    try:
        argv = [
            str(R.PYTHON),
            str(R.BENCH / "txn_pg.py"),
            "--db-url",
            db_url,
            "--n",
            str(cfg.txn_n),
            "--rounds",
            str(cfg.txn_rounds),
            "--out",
            str(out),
        ]
        if os.environ.get("BENCH_PG_CONVEYOR_URL"):  # a stand-in: the API cannot be measured
            argv.append("--baseline-only")
        rc = kids.run(argv, R.REPO, env)
    finally:
        pgadmin(cfg, "drop", cluster.admin_url, dbname)
    if rc == TXN_SKIPPED:
        log("transactional enqueue skipped (see the report)")
        return out, True
    if rc != 0 or not out.exists():
        log(f"txn_pg.py failed rc={rc}")
        out.write_text(json.dumps({"error": f"txn_pg.py exited rc={rc}; see the log above"}))
        return out, False
    return out, True


def run_churn(
    cfg: PgConfig, kids: R.Children, env: dict[str, str], admin_url: str, stamp: str
) -> Path | None:
    tag = f"pg-conveyor-{stamp}"
    argv = [
        str(cfg.peers / ".venv" / "bin" / "python"),
        str(R.BENCH / "churn_pg.py"),
        "--extra-peer",
        f"conveyor={R.PYTHON}:{PEER_FILE}",
        "--pg-url",
        admin_url,
        "--only",
        ",".join(cfg.churn_peers),
        "--total",
        cfg.churn_total,
        "--m",
        str(cfg.churn_m),
        "--chunk",
        str(cfg.churn_chunk),
        "--tag",
        tag,
        "--wait-load",
        str(cfg.wait_load),
        "--wait-load-max",
        str(cfg.wait_load_max),
    ]
    log(f"=== churn ({', '.join(cfg.churn_peers)}; {cfg.churn_total} jobs through the table) ===")
    rc = kids.run(argv, cfg.peers, env)
    path = cfg.peers / "results" / f"churn-{tag}.json"
    if rc != 0:
        log(f"churn exited rc={rc}")
    return path if path.exists() else None


def read_manifest() -> dict[str, object]:
    try:
        data: dict[str, object] = json.loads(MANIFEST.read_text())
        return data
    except (OSError, ValueError):
        return {}


def main(argv: Sequence[str]) -> int:
    churn = "--churn" in argv
    txn_only = "--txn-only" in argv  # the transactional step alone, the suite's entries kept
    cfg = PgConfig.from_env()
    R.stop_on_signals()
    prepare(cfg)
    if "--setup-only" in argv:
        return 0
    stamp = time.strftime("%Y%m%d-%H%M%S")
    kids = R.Children(uuid.uuid4().hex)
    manifest = read_manifest()
    ok = True
    results: list[Path] = []
    with (
        R.private_redis(R.WORK / "run", None) as redis_port,
        pgcluster.private_cluster(
            cfg.peers,
            cfg.pg_port,
            keep_log_in=R.WORK / "run",
        ) as cluster,
    ):
        env = base_env(redis_port, cluster.admin_url)
        try:
            if churn:
                path = run_churn(cfg, kids, env, cluster.admin_url, stamp)
                ok = path is not None
                manifest["churn"] = str(path) if path else None
                manifest["churn_server"] = cluster.version
            else:
                if not txn_only:
                    results = run_suite(cfg, kids, env, cluster.admin_url, stamp)
                    ok = len(results) == cfg.runs
                    manifest["results"] = [str(p) for p in results]
                    manifest["server"] = cluster.version
                if cfg.txn or txn_only:
                    txn, txn_ok = run_txn(cfg, kids, env, cluster, stamp)
                    manifest["txn"] = str(txn)
                    ok = ok and txn_ok
                else:
                    manifest["txn"] = None
        finally:
            kids.stop_all()
            for standin in (R.WORK / "run").glob("standin-bench_*.db*"):
                standin.unlink()  # BENCH_PG_CONVEYOR_URL=sqlite files; their databases are gone
    manifest["written"] = time.strftime("%Y-%m-%d %H:%M:%S")
    MANIFEST.write_text(json.dumps(manifest, indent=1))
    if R.run_report("report_pg.py", MANIFEST, R.WORK / "REPORT-pg.md") != 0:
        return 1
    if errors := R.conveyor_errors(results):
        log("Conveyor's row has errors: " + "; ".join(errors[:3]))
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        log("interrupted")
        sys.exit(130)
