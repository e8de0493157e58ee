"""Renews the worker's leases from a small process beside it.

A thread cannot renew leases while a handler holds the GIL in one long C call
(``sum(range(10**10))``, a regex on a huge input, some C extensions): the job's lease would run
out while it still runs, and another worker would rescue it and run it a second time at once.
So a worker on a store shared between processes hands its leases to a **renewal process**,
which renews them on its own connection whatever the worker's interpreter is doing.

The process must still stop renewing once the worker is gone or frozen, so that its jobs are
rescued: it exits once its stdin closes (the worker exited or was killed; it looks every 50 ms
at most), and it renews only while the worker shows signs of life since the last renewal: a
ping, which a thread of the worker sends a few times per interval, or, when the pings stop
because a C call holds the GIL, CPU time the worker has used (read from ``/proc``; a stopped or
deadlocked worker uses none).

Messages are JSON lines: holds, releases and pings go to the process's stdin; what it learns
(leases lost, cancels requested) comes back on its stdout and is handed to the worker's loop. If
the process dies, it is started again with the leases held at that moment; if it keeps dying,
the worker is told (``on_failure``) and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Generator
from typing import IO, Any, Final, cast

from conveyor.drivers.records import ExtendResult
from conveyor.runtime.lease_keeper import OnExtended, OnRenewal

log = logging.getLogger("conveyor.worker")

READY_TIMEOUT: Final = 30.0  # how long a new renewal process may take to connect
# Where the ``conveyor`` package was imported from: the only path the renewal process needs.
_CONVEYOR_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAX_RESTARTS: Final = 5  # within RESTART_WINDOW seconds, before the worker is stopped
RESTART_WINDOW: Final = 60.0
# Releases kept before they are told without waiting for the next holds.
CHANGES_PER_MESSAGE: Final = 64
# A message line stays within PIPE_BUF (4096 bytes on Linux), so a write of it is all or
# nothing (see _send_now); a change is at most ~3.2 KB (a 255-character id and queue name,
# non-ASCII, escaped).
MESSAGE_BYTES: Final = 4000


class RenewalProcess:
    def __init__(
        self,
        source_url: str,
        *,
        lease_seconds: float,
        interval: float,
        loop: asyncio.AbstractEventLoop,
        on_extended: OnExtended,
        on_failure: Callable[[str, BaseException], None],
        on_renewal: OnRenewal | None = None,
    ) -> None:
        self._url = source_url
        self._lease_seconds = lease_seconds
        self._interval = interval
        self._loop = loop
        self._on_extended = on_extended
        self._on_failure = on_failure
        self._on_renewal = on_renewal
        # job id -> (token, queue): a tuple, not a Lease, since a drain makes one per job.
        self._leases: dict[str, tuple[str, str | None]] = {}
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()  # one writer of the pipe at a time
        self._queued = 0  # messages in the outbox, which must reach the pipe before new ones
        self._queued_lock = threading.Lock()  # guards ``_queued``; never held while writing
        self._stdin_fd: int | None = None
        self._outbox: queue.Queue[bytes | None] = queue.Queue()  # lines, each with its \\n
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._settled = threading.Event()  # ready, or given up: what start() waits for
        self._gave_up = False
        self._process: subprocess.Popen[bytes] | None = None
        self._threads: list[threading.Thread] = []
        self._restarts: list[float] = []
        self._changes: list[list[str | None]] = []  # holds and releases not told yet, in order
        self._batching = 0
        self._flush_scheduled = False

    # -- the worker's side -----------------------------------------------------------------

    # Called on the worker's loop only, so the changes reach the process in the order made.

    def hold(self, job_id: str, token: str, queue: str | None = None) -> None:
        with self._lock:
            self._leases[job_id] = (token, queue)
        self._changes.append(["hold", job_id, token, queue])
        if not self._batching:
            self._flush()

    def release(self, job_id: str, token: str | None = None) -> None:
        """Stop renewing ``job_id``. Told to the process with the next holds, or a moment
        later: renewing a finished job's lease once more is harmless (the backend reports it
        lost, for a token no attempt here runs with), and a drain then costs one message per
        batch of jobs rather than two per job."""
        with self._lock:
            held = self._leases.get(job_id)
            if held is None or (token is not None and held[0] != token):
                return
            del self._leases[job_id]
        self._changes.append(["release", job_id, held[0]])
        if len(self._changes) >= CHANGES_PER_MESSAGE:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_later(self._interval / 4, self._flush)

    @contextlib.contextmanager
    def batch(self) -> Generator[None]:
        self._batching += 1
        try:
            yield
        finally:
            self._batching -= 1
            if not self._batching:
                self._flush()

    def _flush(self) -> None:
        self._flush_scheduled = False
        changes, self._changes = self._changes, []
        for line in encode_changes(changes):
            self._send_now(line)

    def _send_now(self, data: bytes) -> None:
        """Write ``message`` from the calling thread, before the handler starts: a handler that
        takes the GIL at once and keeps it would otherwise hold back the writer thread, and the
        renewal process would never hear of the lease. A line is shorter than ``PIPE_BUF`` (see
        :func:`encode_changes`), so the write is all or nothing; if the pipe is full (or earlier
        lines still wait), the writer thread sends it in order."""
        # Never wait for the lock: the writer thread holds it while the pipe is full (a stopped
        # renewal process), and the event loop must not stall behind it.
        if self._write_lock.acquire(blocking=False):
            try:
                fd = self._stdin_fd
                with self._queued_lock:
                    in_order = self._queued == 0
                if fd is not None and in_order:
                    try:
                        written = os.write(fd, data)
                    except OSError:  # full (BlockingIOError) or gone: the writer sends it
                        written = 0
                    if written == len(data):
                        return
                    # Only a line longer than PIPE_BUF (a single change with an id no enqueue
                    # accepts, written by a foreign producer) goes out in part: the writer
                    # sends the rest, before any later line.
                    data = data[written:]
                self._enqueue(data)
            finally:
                self._write_lock.release()
        else:
            self._enqueue(data)

    def _enqueue(self, data: bytes) -> None:
        with self._queued_lock:
            self._queued += 1
            self._outbox.put(data)

    async def start(self) -> None:
        """Start the process and wait until it is connected and renewing."""
        self._spawn()
        await asyncio.to_thread(self._settled.wait, READY_TIMEOUT)
        if not self._ready.is_set():
            why = "kept exiting" if self._gave_up else f"did not start within {READY_TIMEOUT}s"
            raise RuntimeError(f"the lease renewal process {why}")

    def stop(self) -> None:
        """Blocking: close the process's stdin (it exits) and wait for it."""
        self._stopping.set()
        self._outbox.put(None)
        process = self._process
        if process is not None:
            try:
                process.wait(timeout=max(self._interval, 1.0) + 5.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for thread in self._threads:
            thread.join(timeout=5.0)

    # -- the process ----------------------------------------------------------------------------

    def _spawn(self) -> None:
        env = dict(os.environ)
        # The child imports Conveyor from where this process did (a source tree, a venv), and
        # nothing of the application's: ``-P`` keeps the working directory off its path, so an
        # application module named like one of the standard library (``queue.py``) cannot
        # shadow it there.
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_CONVEYOR_ROOT, os.environ.get("PYTHONPATH", "")) if p
        )
        process = subprocess.Popen(
            [sys.executable, "-P", "-m", "conveyor.runtime._renewal_child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
        assert process.stdin is not None and process.stdout is not None
        os.set_blocking(process.stdin.fileno(), False)
        self._process = process
        self._ready.clear()
        config = {
            "url": self._url,  # on stdin, not the command line, which others can read
            "lease_seconds": self._lease_seconds,
            "interval": self._interval,
            "level": logging.getLogger("conveyor").getEffectiveLevel(),
        }
        with self._lock:
            held = list(self._leases.items())
        first = [_line(config)] + [_line({"hold": [i, t, q]}) for i, (t, q) in held]
        writer = threading.Thread(
            target=self._write,
            args=(process.stdin, self._outbox, first),
            name="conveyor-renewal-writer",
            daemon=True,
        )
        reader = threading.Thread(
            target=self._read, args=(process,), name="conveyor-renewal-reader", daemon=True
        )
        self._threads = [writer, reader]
        writer.start()
        reader.start()

    def _write(
        self,
        stdin: IO[bytes],
        outbox: queue.Queue[bytes | None],
        first: list[bytes],
    ) -> None:
        """Feed one renewal process: its own outbox, so a writer left over from a dead process
        never takes (and loses) a message meant for the next one."""
        own_fd = stdin.fileno()
        ping_every = max(self._interval / 4, 0.01)
        try:
            with self._write_lock:
                for message in first:
                    _send(stdin, message)
                self._stdin_fd = stdin.fileno()
            while True:
                try:
                    next_message = outbox.get(timeout=ping_every)
                except queue.Empty:
                    next_message = _PING
                if next_message is None:
                    break
                with self._write_lock:
                    _send(stdin, next_message)
                    if next_message is not _PING:
                        with self._queued_lock:
                            self._queued = max(self._queued - 1, 0)
        except (BrokenPipeError, OSError, ValueError):
            pass  # the process is gone: the reader notices and starts another
        finally:
            with self._write_lock:
                if self._stdin_fd == own_fd:  # not a newer process's pipe
                    self._stdin_fd = None
                try:
                    stdin.close()
                except OSError:
                    pass

    def _read(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            message = read_message(line)
            if message is None:
                continue
            if "ready" in message:
                self._ready.set()
                self._settled.set()
            elif "lost" in message:
                self._deliver(message)
            elif "renewed" in message:
                self._tell_renewal(bool(message.get("ok")), message.get("renewed"))
        code = process.wait()
        if self._stopping.is_set():
            return
        self._outbox.put(None)  # ends this process's writer
        self._died(RuntimeError(f"the lease renewal process exited with status {code}"))

    def _deliver(self, message: dict[str, Any]) -> None:
        lost = [(str(i), str(t)) for i, t in message.get("lost", [])]
        cancel = [(str(i), str(t)) for i, t in message.get("cancel", [])]
        if not lost and not cancel:
            return
        result = ExtendResult(tuple(i for i, _ in lost), tuple(i for i, _ in cancel))
        sent = dict(lost + cancel)
        try:
            self._loop.call_soon_threadsafe(self._on_extended, result, sent)
        except RuntimeError:  # the worker's loop has closed
            pass

    def _tell_renewal(self, ok: bool, count: object) -> None:
        if self._on_renewal is None or not isinstance(count, int):
            return
        try:
            self._loop.call_soon_threadsafe(self._on_renewal, ok, count)
        except RuntimeError:  # the worker's loop has closed
            pass

    def _died(self, error: BaseException) -> None:
        now = time.monotonic()
        self._restarts = [at for at in self._restarts if now - at < RESTART_WINDOW] + [now]
        if len(self._restarts) > MAX_RESTARTS:
            self._gave_up = True
            self._settled.set()
            try:
                self._loop.call_soon_threadsafe(self._on_failure, "lease renewal", error)
            except RuntimeError:
                pass
            return
        log.error("%s; starting another", error, extra={"event": "restarted"})
        with self._queued_lock:
            self._outbox = queue.Queue()
            self._queued = 0  # the new process is sent every lease held, afresh
        self._spawn()


# Changes encoded together per line: one ``json.dumps`` of a few dozen changes costs a third
# of encoding each on its own, and ~40 typical changes (~80 bytes each) fit in a line.
CHANGES_PER_LINE: Final = 40


def encode_changes(changes: list[list[str | None]]) -> list[bytes]:
    """``changes`` as ``{"changes": [...]}`` lines, in order, each within MESSAGE_BYTES (and so
    written whole): up to CHANGES_PER_LINE a line, fewer where long ids or queue names would
    make the line too long."""
    lines: list[bytes] = []
    pending = [changes[i : i + CHANGES_PER_LINE] for i in range(0, len(changes), CHANGES_PER_LINE)]
    pending.reverse()
    while pending:
        chunk = pending.pop()
        line = (json.dumps({"changes": chunk}) + "\n").encode()
        if len(line) <= MESSAGE_BYTES or len(chunk) == 1:
            lines.append(line)
        else:  # too long: its halves, in order (a single change always fits)
            half = len(chunk) // 2
            pending += [chunk[half:], chunk[:half]]
    return lines


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


_PING: Final = _line({"ping": 1})


def _send(stdin: IO[bytes], line: bytes) -> None:
    """Write one line to the non-blocking pipe, waiting while it is full."""
    data = memoryview(line)
    while data:
        try:
            data = data[os.write(stdin.fileno(), data) :]
        except BlockingIOError:
            time.sleep(0.01)


def read_message(line: bytes | str) -> dict[str, Any] | None:
    """One line of the protocol, or None for anything else (a stray print in an import)."""
    try:
        message: object = json.loads(line)
    except ValueError:
        return None
    return cast("dict[str, Any]", message) if isinstance(message, dict) else None
