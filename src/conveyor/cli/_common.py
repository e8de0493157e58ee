"""Shared helpers of the CLI commands: the queue from ``--url``, loading targets, tables,
progress bars and JSON.

Human output goes through rich only when the stream is a terminal and rich is installed
(``conveyor[cli]``); otherwise, and always when piped, tables are plain aligned columns with no
escape codes, so ``grep``, ``awk`` and tests read the same text whatever is installed."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import click

from conveyor._jobinfo import JobInfo
from conveyor._queue import Queue
from conveyor._worker import Worker
from conveyor.drivers.protocol import Capability
from conveyor.drivers.records import ChangeResult, JobState, WorkerInfo

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

T = TypeVar("T")


def run_with_queue(
    ctx: click.Context, action: Callable[[Queue], Awaitable[T]], *, create: bool = False
) -> T:
    """Open the queue named by ``--url``/``$CONVEYOR_URL``/``$REDIS_URL``, run ``action``, close
    it. Unless ``create``, a store that does not exist is an error saying where it was looked
    for (a command run from the wrong directory must not leave an empty database behind)."""
    url: str | None = ctx.obj.get("url") if ctx.obj else None

    queue = Queue.from_url(url, create=create)
    # A command runs in its own process: an in-process store would show it nothing.
    queue.driver.require(Capability.SHARED_ACROSS_PROCESSES, "from the command line")

    async def go() -> T:
        async with queue:
            return await action(queue)

    return asyncio.run(go())


def load_worker(target: str) -> Worker:
    """Import ``module:attr`` (relative to the working directory) and return the Worker there."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise click.BadParameter(f"expected module:attribute, got {target!r}", param_hint="TARGET")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(
            f"cannot import {module_name!r}: {exc}", param_hint="TARGET"
        ) from exc
    obj = getattr(module, attr, None)
    if obj is None:
        raise click.BadParameter(f"{module_name!r} has no attribute {attr!r}", param_hint="TARGET")
    if callable(obj) and not isinstance(obj, Worker):
        obj = obj()  # a factory function returning a Worker
    if not isinstance(obj, Worker):
        raise click.BadParameter(
            f"{target} is a {type(obj).__name__}, not a conveyor.Worker", param_hint="TARGET"
        )
    return obj


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``12h``, ``7d`` (or plain seconds)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    try:
        if text and text[-1] in units:
            return timedelta(seconds=float(text[:-1]) * units[text[-1]])
        return timedelta(seconds=float(text))
    except ValueError:
        raise click.BadParameter(f"invalid duration {text!r}; use e.g. 90s, 15m, 12h, 7d") from None


def when(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


# How a job state is coloured in rich tables (plain output has no colour).
STATE_STYLES: dict[str, str] = {
    JobState.SCHEDULED.value: "blue",
    JobState.QUEUED.value: "",
    JobState.ACTIVE.value: "cyan",
    JobState.RETRYING.value: "yellow",
    JobState.COMPLETED.value: "green",
    JobState.FAILED.value: "red",
    JobState.CANCELLED.value: "dim",
}


@dataclass(frozen=True, slots=True)
class Styled:
    """A table cell with a rich style; plain output prints only its text."""

    text: object
    style: str

    def __str__(self) -> str:
        return str(self.text)


def state_cell(state: JobState | str) -> Styled:
    value = state.value if isinstance(state, JobState) else state
    return Styled(value, STATE_STYLES.get(value, ""))


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


def console(*, stderr: bool = False) -> Console | None:
    """A rich console on stdout (or stderr) when that stream is a terminal and rich is installed;
    None otherwise, and the caller prints plain text."""
    stream = sys.stderr if stderr else sys.stdout
    if not _is_terminal(stream):
        return None
    try:
        from rich.console import Console
    except ImportError:  # the plain command line: conveyor without the [cli] extra
        return None
    return Console(file=stream)


def print_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    row_styles: Sequence[str] | None = None,
) -> None:
    """Rows under headers: a rich table on a terminal, plain aligned columns otherwise (a header
    line, a line of dashes, one line per row, cells separated by two spaces)."""
    out = console()
    if out is None:
        _print_plain_table(headers, rows)
        return
    out.print(rich_table(headers, rows, row_styles=row_styles))


def rich_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    row_styles: Sequence[str] | None = None,
    title: str | None = None,
) -> Table:
    """The rich ``Table`` of ``print_table`` (numeric columns right-aligned); rich must be
    importable."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, header_style="bold", title=title, title_justify="left")
    for i, header in enumerate(headers):
        numeric = bool(rows) and all(
            isinstance(_text_of(row[i]), int | float) and not isinstance(_text_of(row[i]), bool)
            for row in rows
        )
        table.add_column(header, justify="right" if numeric else "left")
    for n, row in enumerate(rows):
        cells = [
            Text(str(c.text), style=c.style) if isinstance(c, Styled) else Text(str(c)) for c in row
        ]
        table.add_row(*cells, style=row_styles[n] if row_styles else None)
    return table


def _text_of(cell: object) -> object:
    return cell.text if isinstance(cell, Styled) else cell


def _print_plain_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    for line in plain_table(headers, rows):
        click.echo(line)


def plain_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines: list[str] = []
    for i, row in enumerate(cells):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths).rstrip())
    return lines


@contextlib.contextmanager
def progress(description: str, total: int | None) -> Generator[Callable[[int], None]]:
    """Yield ``advance(n)``: a rich progress bar on stderr when stderr is a terminal (so a
    ``--json`` report on stdout stays clean), nothing otherwise. ``total`` None: a spinner with
    a count. The bar goes away when done: the caller prints a summary line either way."""
    out = console(stderr=True)
    if out is None:
        yield lambda n: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=out, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


class Interrupt:
    """Whether Ctrl-C asked to stop: call it, or wait on ``event``."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def __call__(self) -> bool:
        return self.event.is_set()


@contextlib.contextmanager
def stop_on_interrupt(what: str | None) -> Generator[Interrupt]:
    """Inside a running event loop: the first Ctrl-C (SIGINT) asks the caller to stop at its
    next safe point (``stopped()`` turns true) instead of cutting an operation in half; a
    second one interrupts at once, as usual. Where signals cannot be handled (not the main
    thread, Windows) Ctrl-C keeps its usual effect. ``what`` names the safe point in the
    message printed on the first Ctrl-C (None: no message)."""
    loop = asyncio.get_running_loop()
    interrupt = Interrupt()
    # What handled SIGINT before (asyncio.run's own handler cancels the main task): put back
    # after the first Ctrl-C and on the way out.
    previous = signal.getsignal(signal.SIGINT)

    def restore() -> None:
        with contextlib.suppress(RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGINT)
            if previous is not None:
                signal.signal(signal.SIGINT, previous)

    def first() -> None:
        interrupt.event.set()
        restore()
        if what:
            click.echo(f"stopping after {what} (Ctrl-C again to stop at once)", err=True)

    try:
        loop.add_signal_handler(signal.SIGINT, first)
        installed = True
    except (NotImplementedError, RuntimeError, ValueError):
        installed = False
    try:
        yield interrupt
    finally:
        if installed and not interrupt():
            restore()


def job_as_dict(info: JobInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "name": info.name,
        "queue": info.queue,
        "state": info.state.value,
        "priority": info.priority,
        "attempt": info.attempt,
        "max_attempts": info.max_attempts,
        "run_at": info.run_at.isoformat(),
        "enqueued_at": info.enqueued_at.isoformat(),
        "started_at": info.started_at.isoformat() if info.started_at else None,
        "finished_at": info.finished_at.isoformat() if info.finished_at else None,
        "worker_id": info.worker_id,
        "stalls": info.stalls,
        # Secret fields (SecretStr, SecretBytes) as asterisks: the command line shows people.
        "payload": info.redacted_payload,
        "result": info.result,
        "error": info.error,
        "error_attempt": info.error_attempt,
        "errors": [{"attempt": e.attempt, "at": _iso(e.at), "error": e.error} for e in info.errors],
        "cancel_requested": info.cancel_requested,
        "seq": info.seq,
        "progress": info.progress,
        "progress_message": info.progress_message,
        "progress_at": info.progress_at.isoformat() if info.progress_at else None,
        "expires_at": info.expires_at.isoformat() if info.expires_at else None,
        "group": info.group,
        "headers": info.headers,
    }


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat()


def iso(epoch: float | None) -> str | None:
    """An epoch time as ISO 8601 in UTC, the form of every time in ``--json`` output."""
    return None if epoch is None else _iso(epoch)


def change_as_dict(result: ChangeResult) -> dict[str, Any]:
    return {
        "id": result.job_id,
        "status": result.status.value,
        "state": None if result.state is None else result.state.value,
    }


def worker_as_dict(info: WorkerInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "hostname": info.hostname,
        "pid": info.pid,
        "queues": list(info.queues),
        "concurrency": info.concurrency,
        "running": info.running,
        "processed": info.processed,
        "started_at": iso(info.started_at),
        "last_seen_at": iso(info.last_seen_at) if info.last_seen_at else None,
    }


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))
