"""Starts the whole shop on this machine: the SMTP sink and the webhook receiver (threads of
this process), the API (uvicorn) and the worker (``conveyor worker``) as processes of their
own, on free ports. Stopping ends only the processes it started, by their pids."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import IO

import httpx

from examples.shop.local.smtp_sink import SmtpSink
from examples.shop.local.webhook_receiver import WebhookReceiver

ROOT = Path(__file__).resolve().parents[3]
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ShopStack:
    """``with ShopStack(database_url, workdir) as shop:`` runs everything until the block ends;
    ``shop.api_url``, ``shop.sink`` and ``shop.receiver`` are what a scenario talks to."""

    def __init__(self, database_url: str, workdir: Path, *, worker_concurrency: int = 10) -> None:
        self.database_url = database_url
        self.workdir = workdir
        self.worker_concurrency = worker_concurrency
        self.sink = SmtpSink()
        self.receiver = WebhookReceiver()
        self.api_url = ""
        self._processes: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.exit_codes: dict[str, int] = {}  # what each process exited with, once stopped
        self._logs: list[IO[bytes]] = []
        self._exit = ExitStack()

    def __enter__(self) -> ShopStack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._exit.enter_context(self.sink)
            self._exit.enter_context(self.receiver)
            env = self._environment()
            port = free_port()
            self.api_url = f"http://127.0.0.1:{port}"
            api = self._start(
                "api",
                [
                    *("-m", "uvicorn", "examples.shop.api.app:app"),
                    *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
                ],
                env,
            )
            self._wait_until_healthy(api)
            # The API made the shop's tables at start-up; the worker needs them.
            self._start(
                "worker",
                [
                    *("-m", "conveyor", "worker", "examples.shop.worker.app:worker"),
                    *("--concurrency", str(self.worker_concurrency), "--shutdown-grace", "5"),
                ],
                env,
            )
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        # The worker first (it may still be sending), then the API; SIGTERM lets both finish.
        for name, process in reversed(self._processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                self.exit_codes[name] = process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                self.exit_codes[name] = process.wait()
        self._processes.clear()
        for log in self._logs:
            log.close()
        self._logs.clear()
        self._exit.close()

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            SHOP_DATABASE_URL=self.database_url,
            SHOP_SMTP_HOST="127.0.0.1",
            SHOP_SMTP_PORT=str(self.sink.port),
            SHOP_SESSION_CLEANUP_SECONDS="1",
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        )
        env.pop("CONVEYOR_URL", None)
        return env

    def _start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed in __exit__
        self._logs.append(log)
        process = subprocess.Popen(
            [sys.executable, *args], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )
        self._processes.append((name, process))
        return process

    def _wait_until_healthy(self, api: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if api.poll() is not None:
                raise RuntimeError(f"the API exited with {api.returncode}:\n{self.log('api')}")
            try:
                if httpx.get(f"{self.api_url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the API did not answer within {START_TIMEOUT}s:\n{self.log('api')}")
