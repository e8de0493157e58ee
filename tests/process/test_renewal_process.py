"""The lease renewal process beside a worker: it starts whatever the application's directory
holds, follows the worker's log level, and a stalled process never stalls the worker."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from conveyor.backends.registry import driver_for_url
from conveyor.drivers.protocol import Driver
from conveyor.drivers.records import ExtendResult, FetchParams, JobRecord, NewJob
from conveyor.runtime.renewer import RenewalProcess

LEASE = 1.0


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[tuple[str, Driver]]:
    url = f"sqlite:///{tmp_path / 'renewal.db'}"
    driver = driver_for_url(url)
    await driver.open()
    try:
        yield url, driver
    finally:
        await driver.close()


async def _leased(driver: Driver) -> JobRecord:
    await driver.job_insert_many(
        [NewJob(id="job-1", queue="default", name="test.job", payload=b"{}")]
    )
    (record,) = await driver.job_fetch(FetchParams(("default",), 1, "worker-1", LEASE))
    return record


async def _renewed(driver: Driver, record: JobRecord, timeout: float = 10.0) -> None:
    """Wait until the lease has been pushed past its first expiry, bounded."""
    assert record.lease_expires_at is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        (now,) = await driver.job_get_many([record.id])
        assert now is not None and now.lease_expires_at is not None
        if now.lease_expires_at > record.lease_expires_at + 0.5:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the renewal process never renewed the lease")


def _renewal(url: str, failures: list[BaseException]) -> RenewalProcess:
    def on_extended(result: ExtendResult, sent: object) -> None:
        pass

    return RenewalProcess(
        url,
        lease_seconds=LEASE,
        interval=LEASE / 4,
        loop=asyncio.get_running_loop(),
        on_extended=on_extended,
        on_failure=lambda name, exc: failures.append(exc),
    )


@pytest.fixture
def application_dir(tmp_path: Path) -> Iterator[Path]:
    """The working directory of an application with modules named like the standard library's,
    on ``sys.path`` as ``conveyor worker app.worker:worker`` puts it."""
    app = tmp_path / "app"
    app.mkdir()
    for name in ("queue", "json", "signal"):
        (app / f"{name}.py").write_text(f"raise ImportError('the application shadowed {name}')\n")
    before, cwd = list(sys.path), os.getcwd()
    sys.path.insert(0, str(app))
    os.chdir(app)
    try:
        yield app
    finally:
        os.chdir(cwd)
        sys.path[:] = before


async def test_it_starts_beside_an_application_whose_modules_shadow_the_standard_library(
    store: tuple[str, Driver], application_dir: Path
) -> None:
    """Before: the process ran with the worker's whole ``sys.path`` and its working directory
    first on its own, so an application's ``queue.py`` broke it; with a custom log level (5)
    it failed at start as well."""
    url, driver = store
    record = await _leased(driver)
    failures: list[BaseException] = []
    conveyor_log = logging.getLogger("conveyor")
    level = conveyor_log.level
    conveyor_log.setLevel(5)
    renewal = _renewal(url, failures)
    try:
        await renewal.start()
        assert record.lease_token is not None
        renewal.hold(record.id, record.lease_token, record.queue)
        await _renewed(driver, record)
    finally:
        conveyor_log.setLevel(level)
        await asyncio.to_thread(renewal.stop)
    assert failures == []


async def test_a_stopped_renewal_process_never_blocks_the_worker(
    store: tuple[str, Driver],
) -> None:
    """Before: with the process stopped and its pipe full, the writer thread held the pipe's
    lock while waiting, and the worker's loop blocked on that lock at its next hold."""
    url, driver = store
    record = await _leased(driver)
    assert record.lease_token is not None
    failures: list[BaseException] = []
    renewal = _renewal(url, failures)
    await renewal.start()
    process = renewal._process  # pyright: ignore[reportPrivateUsage]
    assert process is not None
    os.kill(process.pid, signal.SIGSTOP)
    try:
        # Far more than a pipe holds: every call returns at once all the same.
        started = time.monotonic()
        for n in range(5000):
            renewal.hold(f"other-{n}", "token", "default")
            renewal.release(f"other-{n}", "token")
        renewal.hold(record.id, record.lease_token, record.queue)
        assert time.monotonic() - started < 5.0
    finally:
        os.kill(process.pid, signal.SIGCONT)
    try:
        # The queued messages reach the process in order: the last hold is renewed.
        (record,) = await driver.job_get_many([record.id])
        assert record is not None
        await _renewed(driver, record, timeout=30)
    finally:
        await asyncio.to_thread(renewal.stop)
    assert failures == []


def test_a_line_that_is_not_a_message_is_ignored_not_fatal() -> None:
    """Before: a JSON line that was not an object (a stray print in an import) raised in the
    thread reading the renewal process, which then never noticed the process exit."""
    from conveyor.runtime.renewer import read_message

    assert read_message(b'{"ready": 1}\n') == {"ready": 1}
    assert [read_message(line) for line in (b"42\n", b"[1, 2]\n", b"hello\n", b"")] == [None] * 4


def test_changes_go_in_lines_of_many_each_short_enough_to_be_written_whole() -> None:
    """Changes are encoded a few dozen per line (one encoding each was a tenth of a no-op
    job's cost), and a line never passes MESSAGE_BYTES, so each is written whole: with the
    longest ids and queue names, non-ASCII (escaped six bytes a character), lines get shorter."""
    import json

    from conveyor.runtime.renewer import CHANGES_PER_LINE, MESSAGE_BYTES, encode_changes

    def told(lines: list[bytes]) -> list[list[str | None]]:
        assert all(line.endswith(b"\n") and len(line) <= MESSAGE_BYTES for line in lines)
        return [change for line in lines for change in json.loads(line)["changes"]]

    assert encode_changes([]) == []
    usual: list[list[str | None]] = [
        ["hold", f"job-{n:012d}", f"token-{n:016x}", "emails"] for n in range(100)
    ]
    usual += [["release", f"job-{n:012d}", f"token-{n:016x}"] for n in range(50)]
    usual.append(["hold", "no-queue", "t", None])
    lines = encode_changes(usual)
    assert told(lines) == usual
    assert len(lines) == -(-len(usual) // CHANGES_PER_LINE)  # as few lines as the count allows
    longest: list[list[str | None]] = [
        ["hold", f"{n:03d}" + "é" * 252, "t" * 64, "ü" * 255] for n in range(30)
    ]
    lines = encode_changes(longest + usual)
    assert told(lines) == longest + usual
    assert len(lines) >= len(longest)  # one such change fills most of a line


def _context_switches(pid: int) -> int:
    """Times any thread of process ``pid`` gave up its CPU to wait (woken again each time)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/status") as status:
            for line in status:
                if line.startswith("voluntary_ctxt_switches:"):
                    total += int(line.split()[1])
    return total


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
async def test_holds_sent_one_at_a_time_do_not_wake_the_renewal_process_each(
    store: tuple[str, Driver],
) -> None:
    """Before: its reader waited in a read of stdin, so every hold (one before each job starts)
    woke it, and woke its loop, at the moment the worker's job should start. It looks every
    READ_EVERY seconds now: 400 holds over ~0.4 s wake it a few dozen times, not ~800."""
    url, driver = store
    record = await _leased(driver)
    assert record.lease_token is not None
    failures: list[BaseException] = []
    renewal = RenewalProcess(
        url,
        lease_seconds=30.0,
        interval=10.0,
        loop=asyncio.get_running_loop(),
        on_extended=lambda result, sent: None,
        on_failure=lambda name, exc: failures.append(exc),
    )
    await renewal.start()
    try:
        process = renewal._process  # pyright: ignore[reportPrivateUsage]
        assert process is not None
        before = _context_switches(process.pid)
        for n in range(400):
            renewal.hold(f"other-{n}", "token", "default")
            await asyncio.sleep(0.001)  # one job start at a time, as a worker makes them
        woken = _context_switches(process.pid) - before
        assert woken < 200, woken
        # And what it read is used: a lease held this way is renewed.
        renewal.hold(record.id, record.lease_token, record.queue)
    finally:
        await asyncio.to_thread(renewal.stop)
    assert failures == []


def test_stdin_lines_hands_out_whole_lines_only_and_sees_the_pipe_close() -> None:
    from conveyor.runtime._renewal_child import READ_EVERY, StdinLines, read_every

    read, write = os.pipe()
    try:
        lines = StdinLines(read)
        os.write(write, b'{"url": "x"}\n{"hold": [1]}\n{"ping"')
        assert lines.first() == b'{"url": "x"}'
        os.set_blocking(read, False)
        assert lines.available() == ([b'{"hold": [1]}'], False)
        assert lines.available() == ([], False)  # nothing more yet, and no wait for it
        os.write(write, b": 1}\n")
        assert lines.available() == ([b'{"ping": 1}'], False)
        os.write(write, b'{"release": [1]}\n')
        os.close(write)
        write = -1
        assert lines.available() == ([b'{"release": [1]}'], True)
    finally:
        os.close(read)
        if write >= 0:
            os.close(write)
    assert read_every(10.0) == READ_EVERY
    assert read_every(0.08) == 0.01  # the worker's pings come four an interval


def test_a_line_written_in_part_is_finished_by_the_writer_before_any_later_line() -> None:
    """A line longer than PIPE_BUF (only a change with an id no enqueue accepts makes one) can
    be written in part when the pipe is nearly full: the rest goes to the writer, in order."""
    read_end, write_end = os.pipe()
    loop = asyncio.new_event_loop()
    try:
        os.set_blocking(write_end, False)
        filler = b"x" * 4096
        while True:  # fill the pipe, then make room for part of the next line only
            try:
                os.write(write_end, filler)
            except BlockingIOError:
                break
        os.read(read_end, 8192)
        renewal = RenewalProcess(
            "memory://unused",
            lease_seconds=LEASE,
            interval=LEASE / 4,
            loop=loop,
            on_extended=lambda result, sent: None,
            on_failure=lambda name, exc: None,
        )
        renewal._stdin_fd = write_end
        line = b"y" * 20_000 + b"\n"
        renewal._send_now(line)
        rest = renewal._outbox.get_nowait()
        assert rest is not None and 0 < len(rest) < len(line) and line.endswith(rest)
        renewal._send_now(b"later\n")  # waits behind the rest
        assert renewal._outbox.get_nowait() == b"later\n"
    finally:
        loop.close()
        os.close(read_end)
        os.close(write_end)
