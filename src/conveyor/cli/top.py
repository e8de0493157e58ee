"""``conveyor top``: a live view of every queue, refreshed every few seconds.

Per queue: jobs by state, completed and failed jobs per minute, the live workers serving it, its
paused flag, and a warning mark when jobs wait with no live worker. Rates come from the
per-minute counts workers write every few seconds (``Queue.stats``), so they do not depend on
how long finished jobs are kept."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import click

from conveyor._errors import ConveyorError
from conveyor._queue import Queue
from conveyor.cli._common import (
    Styled,
    console,
    echo_json,
    plain_table,
    rich_table,
    run_with_queue,
    stop_on_interrupt,
)
from conveyor.cli.queues import queue_as_dict
from conveyor.drivers.records import JobState, QueueStats

if TYPE_CHECKING:
    from rich.console import Group

# A refresh that takes longer than this is given up and reported; the next one tries again.
REFRESH_TIMEOUT: Final = 30.0

_SHOWN = (
    JobState.QUEUED,
    JobState.SCHEDULED,
    JobState.ACTIVE,
    JobState.RETRYING,
    JobState.FAILED,
    JobState.COMPLETED,
)


@dataclass(frozen=True, slots=True)
class Frame:
    """One refresh: when, each queue as ``queues ls --json`` describes it plus its rates, and
    how many workers are live."""

    at: float
    queues: list[dict[str, Any]]
    workers: int

    def as_dict(self, interval: float) -> dict[str, Any]:
        return {
            "at": datetime.fromtimestamp(self.at, UTC).isoformat(),
            "interval": interval,
            "workers": self.workers,
            "queues": self.queues,
        }


async def take_frame(q: Queue) -> Frame:
    infos, live, samples = await q.queues(), await q.workers(), await q.stats(minutes=2)
    now = time.time()
    queues = [queue_as_dict(info, live) for info in infos]
    per_minute = _rates(samples, now)
    for info in queues:
        completed, failed = per_minute.get(info["name"], (0.0, 0.0))
        info["completed_per_minute"] = round(completed, 1)
        info["failed_per_minute"] = round(failed, 1)
    return Frame(now, queues, len(live))


def _rates(samples: Sequence[QueueStats], now: float) -> dict[str, tuple[float, float]]:
    """Completed and failed jobs per queue in the last 60 seconds: the current minute's counts
    and the share of the previous minute's that falls within them."""
    minute = int(now // 60)
    previous_share = 1.0 - (now % 60) / 60
    rates: dict[str, tuple[float, float]] = {}
    for sample in samples:
        if sample.minute == minute:
            weight = 1.0
        elif sample.minute == minute - 1:
            weight = previous_share
        else:
            continue
        completed, failed = rates.get(sample.queue, (0.0, 0.0))
        rates[sample.queue] = (
            completed + sample.completed * weight,
            failed + sample.failed * weight,
        )
    return rates


def _rows(frame: Frame) -> tuple[list[str], list[list[object]], list[str]]:
    """Headers, rows and row styles. The warning mark is the last column, so that the columns
    of a plain frame line up for ``awk`` whether a queue is marked or not."""
    headers = ["queue", "status", "workers", *(s.value for s in _SHOWN), "done/min"]
    headers += ["failed/min", ""]
    rows: list[list[object]] = []
    styles: list[str] = []
    for info in frame.queues:
        status = Styled("paused", "yellow") if info["paused"] else "running"
        counts: list[object] = [info["counts"][s.value] for s in _SHOWN]
        failed = info["counts"][JobState.FAILED.value]
        counts[_SHOWN.index(JobState.FAILED)] = Styled(failed, "red" if failed else "")
        rates = [_rate(info["completed_per_minute"]), _rate(info["failed_per_minute"])]
        mark = Styled("!", "bold yellow") if info["unserved"] else ""
        rows.append([info["name"], status, info["workers"], *counts, *rates, mark])
        styles.append("yellow" if info["unserved"] else "")
    return headers, rows, styles


def _rate(value: float) -> str:
    return f"{value:g}"


def _title(frame: Frame, interval: float | None) -> str:
    at = datetime.fromtimestamp(frame.at).strftime("%H:%M:%S")
    every = f", every {interval:g}s" if interval else ""
    return f"conveyor top  {at}{every}  {frame.workers} live worker(s)"


def _notes(frame: Frame) -> list[str]:
    notes = [
        f"! queue {info['name']} has {info['waiting']} job(s) waiting and no live worker"
        for info in frame.queues
        if info["unserved"]
    ]
    if not frame.queues:
        notes.append("no queues yet")
    return notes


def plain_frame(frame: Frame, interval: float | None) -> list[str]:
    headers, rows, _ = _rows(frame)
    return [_title(frame, interval), *plain_table(headers, rows), *_notes(frame)]


def _rich_frame(frame: Frame, interval: float, error: str | None) -> Group:
    from rich.console import Group
    from rich.text import Text

    headers, rows, styles = _rows(frame)
    table = rich_table(headers, rows, row_styles=styles, title=_title(frame, interval))
    parts: list[Any] = [table]
    parts += [Text(note, style="yellow") for note in _notes(frame)]
    if error:
        parts.append(Text(f"refresh failed, retrying: {error}", style="bold red"))
    parts.append(Text("Ctrl-C to quit", style="dim"))
    return Group(*parts)


@click.command()
@click.option(
    "--interval",
    type=click.FloatRange(0.2, 3600),
    default=2.0,
    show_default=True,
    help="Seconds between refreshes.",
)
@click.option("--once", is_flag=True, help="Print one frame and exit.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the numbers as JSON: one object with --once, else one line per refresh.",
)
@click.pass_context
def top(ctx: click.Context, interval: float, once: bool, as_json: bool) -> None:
    """A live view of the queues: jobs by state, completed and failed per minute, workers,
    paused queues, and a ! by a queue whose jobs wait with no live worker.

    On a terminal the view redraws in place; piped, each refresh is printed after the last.
    Ctrl-C quits (exit 0). A refresh that fails is shown and tried again at the next one."""

    async def go(q: Queue) -> None:
        if once:
            frame = await take_frame(q)
            if as_json:
                echo_json(frame.as_dict(interval))
            else:
                _print_once(frame)
            return
        await _watch(q, interval, as_json)

    run_with_queue(ctx, go)


def _print_once(frame: Frame) -> None:
    out = console()
    if out is None:
        for line in plain_frame(frame, None):
            click.echo(line)
        return
    from rich.console import Group
    from rich.text import Text

    headers, rows, styles = _rows(frame)
    notes = [Text(note, style="yellow") for note in _notes(frame)]
    table = rich_table(headers, rows, row_styles=styles, title=_title(frame, None))
    out.print(Group(table, *notes))


async def _watch(q: Queue, interval: float, as_json: bool) -> None:
    """Refresh until Ctrl-C. Only the last frame is kept between refreshes."""
    out = None if as_json else console()
    with stop_on_interrupt(None) as stopped, contextlib.ExitStack() as stack:
        live = None
        if out is not None:
            from rich.live import Live

            live = stack.enter_context(Live(console=out, auto_refresh=False))
        frame: Frame | None = None
        while not stopped():
            error: str | None = None
            try:
                async with asyncio.timeout(REFRESH_TIMEOUT):
                    frame = await take_frame(q)
            except TimeoutError:
                error = f"no answer from the backend within {REFRESH_TIMEOUT:g}s"
            except (ConveyorError, OSError) as exc:  # the backend is away: say so, try again
                error = str(exc) or type(exc).__name__
            if live is not None:
                if frame is not None:
                    live.update(_rich_frame(frame, interval, error), refresh=True)
                else:
                    live.update(f"refresh failed, retrying: {error}", refresh=True)
            elif error is not None:
                click.echo(f"refresh failed, retrying: {error}", err=True)
            elif frame is not None and as_json:
                click.echo(json.dumps(frame.as_dict(interval)))
            elif frame is not None:
                click.echo("\n".join([*plain_frame(frame, interval), ""]))
            with contextlib.suppress(TimeoutError):  # Ctrl-C ends the wait at once
                await asyncio.wait_for(stopped.event.wait(), interval)
