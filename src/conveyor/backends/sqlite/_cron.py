"""Schedules on SQLite: ``cron_register``, ``cron_fire`` and ``cron_list`` (queries in
``cron.sql``). A fire is one ``BEGIN IMMEDIATE`` transaction: it reads the schedule's latest
tick, records the new one and inserts its job with the statements of ``job_insert_many``, so a
tick fires once across every process sharing the file."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from importlib import resources
from typing import Any, Final

from conveyor.backends.sqlite._insert import insert_statements
from conveyor.backends.sqlite._sql import parse_queries
from conveyor.drivers.common import cron_info_of
from conveyor.drivers.records import (
    CronFire,
    CronFireResult,
    CronFireStatus,
    CronInfo,
    CronSchedule,
)
from conveyor.drivers.transactional import run_plan

Q: Final = parse_queries(
    resources.files("conveyor.backends.sqlite").joinpath("cron.sql").read_text(encoding="utf-8")
)


def register(
    conn: sqlite3.Connection, schedules: Sequence[CronSchedule], at: float
) -> dict[str, int | None]:
    recorded: dict[str, int | None] = {}
    for s in schedules:
        args = {
            "name": s.name,
            "queue": s.queue,
            "job_name": s.job_name,
            "expression": s.expression,
            "tz": s.tz,
            "catch_up": s.catch_up,
            "overlap": s.overlap,
            "now": at,
        }
        (row,) = conn.execute(Q["cron_register"], args).fetchall()
        recorded[s.name] = None if row[0] is None else int(row[0])
    return recorded


def fire(conn: sqlite3.Connection, request: CronFire, at: float) -> CronFireResult:
    """Run inside the write transaction."""
    last = conn.execute(Q["cron_fire__last"], {"name": request.name}).fetchall()
    last_tick = None if not last or last[0][0] is None else int(last[0][0])
    if last_tick is not None and request.tick <= last_tick:
        return CronFireResult(CronFireStatus.ALREADY, last_tick)
    status = CronFireStatus.FIRED
    if request.skip_if_running and last and last[0][1]:
        status = CronFireStatus.SKIPPED
    else:
        run_plan(
            insert_statements([request.job], at),
            lambda s: conn.execute(s.sql, s.params).fetchall(),
        )
    args: dict[str, Any] = {
        "name": request.name,
        "queue": request.job.queue,
        "job_name": request.job.name,
        "now": at,
        "tick": request.tick,
        "status": status.value,
        "job_id": request.job.id if status is CronFireStatus.FIRED else None,
    }
    conn.execute(Q["cron_fire"], args)
    return CronFireResult(status, request.tick)


def listing(conn: sqlite3.Connection) -> list[CronInfo]:
    return [cron_info_of(row) for row in conn.execute(Q["cron_list"]).fetchall()]
