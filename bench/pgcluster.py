"""A private PostgreSQL cluster for the benchmark: initdb defaults, a free loopback port.

`initdb` and `postgres` come from PATH, else from Debian's /usr/lib/postgresql/<v>/bin. The
cluster lives in a new temporary directory (removed afterwards); the server is started directly
(not through `pg_ctl start`), in its own session, so it is a child of ours and is stopped by its
own pid: SIGINT (PostgreSQL's "fast" shutdown), SIGQUIT and then SIGKILL if it does not go.
Port 5432 and any port that already answers are refused, and the server is only used once it
answers with our own data directory, so a server we did not start is never used, stopped or
emptied.

PostgreSQL refuses to run as root: when we are root the cluster belongs to, and the server runs
as, the `postgres` system user (else `nobody`).

Settings are initdb's defaults (autovacuum on, shared_buffers 128 MB, fsync and
synchronous_commit on) plus what the harness needs: listen on 127.0.0.1 only, the Unix socket
in the temporary directory, trust authentication (initdb's default when none is given; passed
explicitly to silence its warning), superuser `postgres`.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# Never started on: the machine's own server's port.
RESERVED_PG_PORTS = {5432}
START_TIMEOUT_S = 60.0


def log(msg: str) -> None:
    print(f"[bench-pg] {msg}", file=sys.stderr, flush=True)


def find_bin_dir() -> Path | None:
    """The directory that holds both `initdb` and `postgres`, or None."""
    initdb = shutil.which("initdb")
    if initdb:
        found = Path(initdb).resolve().parent
        if (found / "postgres").exists():
            return found
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "postgres").exists():
            return Path(candidate)
    return None


def server_user() -> str | None:
    """The user the server runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    sys.exit("running as root and there is no postgres or nobody user to run PostgreSQL as")


@dataclass(frozen=True)
class Cluster:
    port: int
    data: Path
    socket_dir: Path
    pid: int
    version: str

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"


def _clean_env() -> dict[str, str]:
    # Nothing of ours reaches the server: no PG* variable that could point libpq elsewhere, and
    # not the bench's session token (processes carrying it are stopped after every step).
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PG") and k != "CONVEYOR_BENCH_SESSION"
    } | {"LC_ALL": os.environ.get("LC_ALL", "C.UTF-8")}


def _run_as(argv: Sequence[str], user: str | None, log_path: Path) -> None:
    with open(log_path, "ab") as out:
        rc = subprocess.run(
            argv, user=user, env=_clean_env(), stdout=out, stderr=subprocess.STDOUT, cwd="/"
        ).returncode
    if rc != 0:
        tail = log_path.read_text(errors="replace")[-2000:]
        sys.exit(f"{argv[0]} failed (rc={rc}):\n{tail}")


def answers_as(peers: Path, url: str, data: Path) -> bool:
    """True once the server at `url` answers and its data directory is `data`.

    Asked through the peers copy's pgadmin.py (psycopg, in .venv-pg): a server that took the
    port between our check and our start would answer with another directory.
    """
    python, pgadmin = peers / ".venv-pg" / "bin" / "python", peers / "pgadmin.py"
    cp = subprocess.run(
        [str(python), str(pgadmin), "query", url, "SELECT current_setting('data_directory')"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if cp.returncode != 0:
        return False
    try:
        rows = json.loads(cp.stdout)
    except ValueError:
        return False
    return bool(rows) and Path(rows[0][0]).resolve() == data.resolve()


def port_in_use(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def free_port() -> int:
    import socket

    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in RESERVED_PG_PORTS and not port_in_use(port):
            return port


@contextmanager
def private_cluster(
    peers: Path,
    port: int | None = None,
    keep_log_in: Path | None = None,
    settings: Sequence[str] = (),
) -> Iterator[Cluster]:
    """initdb a new cluster in a temporary directory, start it, yield it, stop it, remove it.

    `peers`: the peers copy, whose .venv-pg and pgadmin.py check the server's identity.
    `keep_log_in`: copy the server log there before the directory is removed.
    `settings`: extra `-c name=value` server settings (none by default).
    """
    bindir = find_bin_dir()
    if bindir is None:
        sys.exit("PostgreSQL's initdb/postgres not found (PATH, /usr/lib/postgresql/*/bin)")
    port = port or free_port()
    if port in RESERVED_PG_PORTS:
        sys.exit(f"port {port} is reserved for the machine's own PostgreSQL")
    if port_in_use(port):
        sys.exit(f"port {port} is already in use; we only ever use a server we started")
    user = server_user()
    top = Path(tempfile.mkdtemp(prefix="conveyor-bench-pg-"))
    data, log_path = top / "data", top / "server.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        if user:
            shutil.chown(top, user=user)
        log_path.touch()
        if user:
            shutil.chown(log_path, user=user)
        version = subprocess.run(
            [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=True
        ).stdout.strip()
        log(f"initdb ({version}) in {data}" + (f" as user {user}" if user else ""))
        _run_as(
            [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-N"],
            user,
            log_path,
        )
        argv = [str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(top),
                "-c", "listen_addresses=127.0.0.1"]  # fmt: skip
        for s in settings:
            argv += ["-c", s]
        with open(log_path, "ab") as out:
            # own session: a Ctrl-C in the terminal reaches us, and we decide when it stops
            proc = subprocess.Popen(
                argv,
                user=user,
                env=_clean_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd="/",
                start_new_session=True,
            )
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        deadline = time.time() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                sys.exit(f"postgres exited rc={proc.returncode}:\n{tail}")
            if answers_as(peers, url, data):
                break
            if time.time() > deadline:
                raise RuntimeError(f"postgres on port {port} did not answer in time")
            time.sleep(0.2)
        log(f"private PostgreSQL pid {proc.pid} on 127.0.0.1:{port} ({data})")
        yield Cluster(port=port, data=data, socket_dir=top, pid=proc.pid, version=version)
    finally:
        if proc is not None:
            stop_server(proc)
        if keep_log_in is not None and log_path.exists():
            keep_log_in.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(log_path, keep_log_in / f"postgres-{port}.log")
        shutil.rmtree(top, ignore_errors=True)


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """Fast shutdown by the postmaster's own pid (SIGINT), then immediate, then SIGKILL."""
    if proc.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGINT, 30), (signal.SIGQUIT, 10), (signal.SIGKILL, 10)):
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait_s)
            break
        except subprocess.TimeoutExpired:
            continue
    log(f"stopped PostgreSQL (pid {proc.pid})")
