"""The lease renewal process (see :mod:`conveyor.runtime.renewer`): ``python -m
conveyor.runtime._renewal_child``, started by a worker, fed JSON lines on stdin.

The first line is its configuration (store URL, lease length, renewal interval, log level);
then come ``hold``, ``release`` and ``ping`` messages. Every interval it renews the leases it
holds, if the worker showed a sign of life since the previous renewal, and reports leases lost
and cancels requested on stdout. It reads stdin every few tens of milliseconds rather than
waiting in a read (see _read_stdin), and exits once it finds stdin closed. It ignores SIGINT
and SIGTERM: a Ctrl-C or a signal to the worker's process group must not end renewals while
the worker is still finishing its jobs; the worker closes stdin when it is done.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Any, Final

from conveyor._logging import configure_logging
from conveyor.backends.registry import driver_for_url
from conveyor.drivers.records import Lease
from conveyor.runtime.renewer import read_message

log = logging.getLogger("conveyor.worker")

# How long the stdin reader sleeps between looks at most (see _read_stdin).
READ_EVERY: Final = 0.05


def parent_cpu_seconds(pid: int) -> float | None:
    """CPU time process ``pid`` has used, or None where ``/proc`` cannot tell."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        # utime and stime are fields 14 and 15 of the file; 12 and 13 after the ")".
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class Renewer:
    def __init__(self, config: dict[str, Any], parent: int) -> None:
        self.lease_seconds = float(config["lease_seconds"])
        self.interval = float(config["interval"])
        self.driver = driver_for_url(str(config["url"]))
        self.parent = parent
        self.leases: dict[str, Lease] = {}
        self.last_sign = time.monotonic()  # of life from the worker: a message or CPU used
        self.closed = asyncio.Event()
        # Set by the first lease received: a process that replaces one that died renews the
        # leases it is handed at once, not an interval later (they may be close to lapsing).
        self.first_hold = asyncio.Event()
        self._cpu = parent_cpu_seconds(parent)
        self._warned = False

    def receive_all(self, messages: list[dict[str, Any]]) -> None:
        """Each message on its own: one that cannot be read costs only itself."""
        for message in messages:
            try:
                self.receive(message)
            except (ValueError, TypeError, KeyError):
                log.exception("lease renewal ignored a message it cannot read: %.200r", message)

    def receive(self, message: dict[str, Any]) -> None:
        self.last_sign = time.monotonic()
        for change in message.get("changes", ()):
            kind, *rest = change
            self.receive({kind: rest})
        if "hold" in message:
            job_id, token, queue = message["hold"]
            self.leases[job_id] = Lease(job_id, token, queue)
            self.first_hold.set()
        elif "release" in message:
            job_id, token = message["release"]
            held = self.leases.get(job_id)
            if held is not None and held.token == token:
                del self.leases[job_id]

    def worker_alive(self) -> bool:
        """A message arrived, or the worker used CPU, within the last interval (the worker
        pings four times an interval), and it is still our parent: a process that inherited our
        stdin cannot keep us renewing for a dead one. Judged by time, not by a flag reset on
        each check, so a quick retry after a failed renewal is not skipped."""
        if self.orphaned():
            return False
        now = time.monotonic()
        cpu = parent_cpu_seconds(self.parent)
        if cpu is not None and self._cpu is not None and cpu > self._cpu:
            self.last_sign = now
        self._cpu = cpu
        return now - self.last_sign <= self.interval

    def orphaned(self) -> bool:
        if os.getppid() != self.parent:
            self.closed.set()
            return True
        return False

    async def run(self) -> None:
        if not await self._open():
            return
        emit({"ready": 1})
        retry = max(min(self.interval / 4, 1.0), 0.01)
        wait = self.interval
        first = True
        while not self.closed.is_set():
            try:
                async with asyncio.timeout(wait):
                    if first:
                        await self._closed_or_first_hold()
                    else:
                        await self.closed.wait()
            except TimeoutError:
                pass
            if self.closed.is_set():
                break
            first = False
            started = time.monotonic()
            ok = await self.renew()
            wait = max((self.interval if ok else retry) - (time.monotonic() - started), 0.0)
        await self.driver.close()

    async def _closed_or_first_hold(self) -> None:
        waits = [
            asyncio.ensure_future(self.closed.wait()),
            asyncio.ensure_future(self.first_hold.wait()),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pending in waits:
                pending.cancel()

    async def _open(self) -> bool:
        """Connect, retrying while the worker is there to wait for it; false once it is gone."""
        delay = 0.05
        while not self.closed.is_set() and not self.orphaned():
            try:
                await self.driver.open()
                return True
            except Exception as exc:
                log.error("lease renewal cannot connect, retrying: %s", exc)
                try:
                    async with asyncio.timeout(delay):
                        await self.closed.wait()
                except TimeoutError:
                    pass
                delay = min(delay * 2, 2.0)
        return False

    async def renew(self) -> bool:
        if not self.worker_alive():
            if not self._warned and self.leases:
                log.warning(
                    "the worker (pid %d) shows no sign of life; its %d lease(s) are not renewed "
                    "and will be rescued if it does not recover",
                    self.parent,
                    len(self.leases),
                )
                self._warned = True
            return True
        self._warned = False
        leases = list(self.leases.values())
        if not leases:
            return True
        try:
            result = await self.driver.job_extend_leases(leases, self.lease_seconds)
        except Exception as exc:  # retried soon; a lease outlives several failed renewals
            log.warning("extending %d lease(s) failed: %s", len(leases), exc)
            emit({"renewed": len(leases), "ok": 0})
            return False
        emit({"renewed": len(leases), "ok": 1})
        tokens = {lease.job_id: lease.token for lease in leases}
        if result.lost or result.cancel_requested:
            emit(
                {
                    "lost": [[i, tokens[i]] for i in result.lost],
                    "cancel": [[i, tokens[i]] for i in result.cancel_requested],
                }
            )
        return True


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


class StdinLines:
    """The lines of the worker's messages, read from stdin's file descriptor itself (no
    buffer of Python's in between, so nothing read is hidden from a later read)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._rest = b""  # the start of a line not complete yet: at most one message

    def first(self) -> bytes | None:
        """The first line, waiting for it; None if stdin closed before it came."""
        while b"\n" not in self._rest:
            data = os.read(self.fd, 65536)
            if not data:
                return None
            self._rest += data
        line, _, self._rest = self._rest.partition(b"\n")
        return line

    def available(self) -> tuple[list[bytes], bool]:
        """The complete lines that can be read now without waiting (stdin must be
        non-blocking), and whether stdin has closed."""
        closed = False
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            except OSError:  # stdin broken: as good as closed (the worker starts another)
                closed = True
                break
            if not data:
                closed = True
                break
            self._rest += data
        *lines, self._rest = self._rest.split(b"\n")
        return lines, closed


def read_every(interval: float) -> float:
    """How long the reader sleeps between looks at stdin: short beside the renewal interval
    (the worker's pings, four an interval, must be seen before the next renewal)."""
    return min(READ_EVERY, interval / 8)


def _read_stdin(
    loop: asyncio.AbstractEventLoop, renewer: Renewer, lines: StdinLines, every: float
) -> None:
    """Hand the worker's messages to the loop, looking at stdin every ``every`` seconds rather
    than waiting in a read: a write to a pipe that a reader waits on wakes that reader, and the
    worker writes a hold just before each job starts, so a waiting reader would be scheduled
    (and take a CPU from the worker) at the moment a job should start. A message is only needed
    by the next renewal, an interval away."""
    os.set_blocking(lines.fd, False)
    while True:
        got, closed = lines.available()
        messages = [m for m in map(read_message, got) if m is not None]
        if messages:
            loop.call_soon_threadsafe(renewer.receive_all, messages)
        if closed:
            loop.call_soon_threadsafe(renewer.closed.set)
            return
        time.sleep(every)


async def _main(config: dict[str, Any], parent: int, lines: StdinLines) -> None:
    renewer = Renewer(config, parent)
    loop = asyncio.get_running_loop()
    every = read_every(renewer.interval)
    threading.Thread(target=_read_stdin, args=(loop, renewer, lines, every), daemon=True).start()
    await renewer.run()


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = os.getppid()
    lines = StdinLines(sys.stdin.fileno())
    first = lines.first()
    if first is None:
        return
    config = json.loads(first)
    configure_logging()
    # A number, not a name: custom levels (5, 25) have no name configure_logging would accept.
    logging.getLogger("conveyor").setLevel(int(config.get("level", logging.WARNING)))
    asyncio.run(_main(config, parent, lines))


if __name__ == "__main__":
    main()
