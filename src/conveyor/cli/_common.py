"""Shared helpers of the CLI commands: the queue from ``--url``, loading targets, tables."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import click

from conveyor._jobinfo import JobInfo
from conveyor._queue import Queue
from conveyor._worker import Worker
from conveyor.drivers.protocol import Capability

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


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for i, row in enumerate(cells):
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            click.echo("  ".join("-" * w for w in widths))


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
        "payload": info.payload,
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
    }


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat()


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))
