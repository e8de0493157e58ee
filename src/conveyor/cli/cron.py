"""``conveyor cron ls``: the schedules workers declared, their last and next fire times."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import click

from conveyor._queue import Queue
from conveyor.cli._common import Styled, echo_json, print_table, run_with_queue, when
from conveyor.core.schedule import describe, next_fire
from conveyor.drivers.records import CronInfo


@click.group()
def cron() -> None:
    """Cron and interval schedules."""


@cron.command("ls")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per schedule, in a list.")
@click.pass_context
def cron_ls(ctx: click.Context, as_json: bool) -> None:
    """Schedules declared by workers, with their last tick (fired or skipped) and the next.

    Times are local; a schedule stays listed after its code is removed, with the time a worker
    last declared it."""

    async def fetch(q: Queue) -> list[CronInfo]:
        return await q.schedules()

    infos = run_with_queue(ctx, fetch)
    now = time.time()
    if as_json:
        echo_json([_as_dict(info, now) for info in infos])
        return
    rows = [
        [
            info.schedule.name,
            info.schedule.job_name,
            info.schedule.queue,
            describe(info.schedule.expression, info.schedule.tz),
            info.schedule.catch_up,
            info.schedule.overlap,
            _last(info),
            when(_at(_next(info, now))),
        ]
        for info in infos
    ]
    headers = ["schedule", "job", "queue", "when", "catch_up", "overlap", "last", "next"]
    print_table(headers, rows)


def _next(info: CronInfo, now: float) -> int | None:
    s = info.schedule
    return next_fire(s.expression, s.tz, after=max(now, info.last_tick or 0))


def _last(info: CronInfo) -> Styled:
    if info.last_tick is None or info.last_status is None:
        return Styled("-", "dim")
    status = info.last_status.value
    return Styled(f"{when(_at(info.last_tick))} ({status})", "" if status == "fired" else "yellow")


def _at(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat()


def _as_dict(info: CronInfo, now: float) -> dict[str, object]:
    s = info.schedule
    return {
        "name": s.name,
        "job": s.job_name,
        "queue": s.queue,
        "expression": s.expression,
        "tz": s.tz,
        "catch_up": s.catch_up,
        "overlap": s.overlap,
        "last_tick": _iso(info.last_tick),
        "last_status": None if info.last_status is None else info.last_status.value,
        "next_tick": _iso(_next(info, now)),
        "declared_at": _iso(info.registered_at),
    }
