"""The harness of the process tests: real ``conveyor`` subprocesses on a private store (a
SQLite file, or a key prefix of its own on the test session's Redis).

Every test gets its own directory (``tmp_path``) with its own store, ledger and marker files,
so the tests run in parallel under pytest-xdist. Every wait is a bounded poll on a condition;
every subprocess started here is killed by pid in the fixture teardown.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from conveyor import JobInfo, SyncQueue
from tests.process.app import ledger

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
APP = "tests.process.app.worker"
_SCRIPT = Path(sys.executable).with_name("conveyor")
# The installed console script when there is one (the real entry point), else the same main().
CONVEYOR = (
    [str(_SCRIPT)]
    if _SCRIPT.exists()
    else [sys.executable, "-c", "from conveyor.cli import main; main()"]
)


def wait_for(
    condition: Callable[[], T | None], *, timeout: float, what: str, every: float = 0.02
) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


class WorkerProcess:
    """One ``conveyor worker`` subprocess with its output in files."""

    def __init__(self, popen: subprocess.Popen[bytes], out: Path, err: Path) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.out = out
        self.err = err

    def __repr__(self) -> str:
        return f"WorkerProcess(pid={self.pid}, rc={self.popen.poll()})"

    def log(self) -> str:
        return self.err.read_text(errors="replace") + self.out.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def send(self, sig: signal.Signals) -> None:
        os.kill(self.pid, sig)

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"worker {self.pid} still running after {timeout:g}s; log:\n{self.log()}"
            ) from None

    def wait_log(self, text: str, timeout: float = 15.0) -> None:
        def seen() -> bool:
            if text in self.log():
                return True
            if not self.alive():
                raise AssertionError(f"worker exited before logging {text!r}:\n{self.log()}")
            return False

        wait_for(seen, timeout=timeout, what=f"worker {self.pid} to log {text!r}")


class Harness:
    def __init__(self, root: Path, url: str) -> None:
        self.root = root
        self.url = url
        self.ledger = root / "ledger.db"
        self.marker = root / "marker"
        ledger.create(str(self.ledger))
        self.queue = SyncQueue.from_url(self.url)
        self.processes: list[WorkerProcess] = []
        self.env = {k: v for k, v in os.environ.items() if k != "CONVEYOR_URL"}
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
        )
        self.env[ledger.ENV] = str(self.ledger)

    # -- subprocesses --------------------------------------------------------------------------

    def cli_args(self, *args: str) -> list[str]:
        # ``--url`` only: the CLI must export it as $CONVEYOR_URL before importing the app.
        return [*CONVEYOR, "--url", self.url, *args]

    def start_worker(self, *args: str, target: str = f"{APP}:worker") -> WorkerProcess:
        n = len(self.processes)
        out, err = self.root / f"worker{n}.out", self.root / f"worker{n}.err"
        with out.open("wb") as fout, err.open("wb") as ferr:
            popen = subprocess.Popen(
                self.cli_args("worker", target, *args),
                cwd=self.root,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=fout,
                stderr=ferr,
            )
        proc = WorkerProcess(popen, out, err)
        self.processes.append(proc)
        return proc

    def run_cli(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.cli_args(*args),
            cwd=self.root,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def kill_all(self) -> None:
        for proc in self.processes:
            if proc.popen.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                proc.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - a zombie we cannot reap
                pass

    # -- the queue -----------------------------------------------------------------------------

    def job(self, job_id: str) -> JobInfo:
        info = self.queue.get(job_id)
        assert info is not None, f"job {job_id} is gone"
        return info

    def counts(self) -> dict[str, int]:
        return {str(k): v for k, v in self.queue.call(self.queue.queue.counts()).items() if v}

    # -- the ledger ----------------------------------------------------------------------------

    def events(self, job_id: str | None = None, event: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT job_id, job_name, attempt, pid, event, at FROM execution WHERE 1=1"
        args: list[Any] = []
        if job_id is not None:
            sql += " AND job_id = ?"
            args.append(job_id)
        if event is not None:
            sql += " AND event = ?"
            args.append(event)
        conn = sqlite3.connect(self.ledger, timeout=30.0)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(row) for row in conn.execute(sql + " ORDER BY rowid", args)]
        finally:
            conn.close()

    def event_kinds(self, job_id: str) -> list[str]:
        return [e["event"] for e in self.events(job_id)]

    def wait_started(self, job_id: str, timeout: float = 20.0) -> dict[str, Any]:
        try:
            rows = wait_for(
                lambda: self.events(job_id, "start"), timeout=timeout, what=f"{job_id} to start"
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}; worker logs:\n{self.logs()}") from None
        return rows[-1]

    def store_problems(self) -> list[str]:
        """Whatever is structurally wrong with the store (empty when it is sound)."""
        if self.url.startswith("sqlite:"):
            conn = sqlite3.connect(self.url.removeprefix("sqlite:///"), timeout=30.0)
            try:
                found = [row[0] for row in conn.execute("PRAGMA integrity_check")]
            finally:
                conn.close()
            return [] if found == ["ok"] else found
        if self.url.startswith("postgresql:"):
            from tests.backends.postgres.consistency import problems as postgres_problems

            return postgres_problems(self.url)
        from tests.backends.redis.consistency import problems

        return problems(self.url)

    def logs(self) -> str:
        return "\n".join(f"--- worker {p.pid}:\n{p.log()}" for p in self.processes)

    def wait_state(self, job_id: str, *states: str, timeout: float = 20.0) -> JobInfo:
        def reached() -> JobInfo | None:
            info = self.job(job_id)
            return info if info.state.value in states else None

        try:
            return wait_for(reached, timeout=timeout, what=f"job {job_id} to reach {states!r}")
        except AssertionError as exc:
            raise AssertionError(f"{exc} (now {self.job(job_id)}); logs:\n{self.logs()}") from None
