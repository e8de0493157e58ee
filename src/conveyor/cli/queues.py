"""``conveyor queues ls|pause|resume``, ``conveyor workers`` and ``conveyor migrate``."""

from __future__ import annotations

import click

from conveyor._queue import Queue
from conveyor.cli._common import print_table, run_with_queue
from conveyor.drivers.records import JobState, QueueInfo, WorkerInfo

_COLUMNS = [
    JobState.QUEUED,
    JobState.SCHEDULED,
    JobState.ACTIVE,
    JobState.RETRYING,
    JobState.COMPLETED,
    JobState.FAILED,
    JobState.CANCELLED,
]


_WAITING = (JobState.QUEUED, JobState.SCHEDULED, JobState.RETRYING)


@click.group()
def queues() -> None:
    """List, pause and resume queues."""


@queues.command("ls")
@click.pass_context
def queues_ls(ctx: click.Context) -> None:
    """Queues with their job counts by state and the live workers serving each."""

    async def fetch(q: Queue) -> tuple[list[QueueInfo], list[WorkerInfo]]:
        return await q.queues(), await q.workers()

    infos, live = run_with_queue(ctx, fetch)
    serving = {info.name: sum(info.name in w.queues for w in live) for info in infos}
    rows = [
        [info.name, "paused" if info.paused else "running", serving[info.name]]
        + [info.counts.get(s, 0) for s in _COLUMNS]
        for info in infos
    ]
    print_table(["queue", "status", "workers"] + [s.value for s in _COLUMNS], rows)
    for info in infos:
        waiting = sum(info.counts.get(s, 0) for s in _WAITING)
        if waiting and not serving[info.name] and not info.paused:
            click.echo(
                f"warning: queue {info.name} has {waiting} job(s) waiting and no live worker "
                "serving it",
                err=True,
            )


@queues.command("pause")
@click.argument("name")
@click.pass_context
def queues_pause(ctx: click.Context, name: str) -> None:
    """Stop workers from starting jobs of queue NAME (running ones finish)."""
    run_with_queue(ctx, lambda q: q.pause(name))
    click.echo(f"queue {name} paused")


@queues.command("resume")
@click.argument("name")
@click.pass_context
def queues_resume(ctx: click.Context, name: str) -> None:
    """Let workers start jobs of queue NAME again."""
    run_with_queue(ctx, lambda q: q.resume(name))
    click.echo(f"queue {name} resumed")


@click.command()
@click.pass_context
def workers(ctx: click.Context) -> None:
    """Live workers (those whose heartbeat has not expired)."""

    async def fetch(q: Queue) -> list[list[object]]:
        return [
            [w.id, ",".join(w.queues), w.concurrency, w.running, w.processed]
            for w in await q.workers()
        ]

    print_table(
        ["worker", "queues", "concurrency", "running", "processed"], run_with_queue(ctx, fetch)
    )


@click.command()
@click.option(
    "--outbox",
    metavar="URL",
    help="Create the outbox table in this database (postgresql://... or sqlite:///...) instead.",
)
@click.pass_context
def migrate(ctx: click.Context, outbox: str | None) -> None:
    """Create or upgrade the backend's schema (workers also do this when they start)."""
    if outbox:
        from conveyor.outbox import outbox_for_url

        box = outbox_for_url(outbox)
        box.ensure_schema()
        click.echo(f"outbox table ready in {box.url}")
        return

    async def apply(q: Queue) -> list[str]:
        return await q.driver.migrate()

    applied = run_with_queue(ctx, apply, create=True)
    click.echo(f"applied: {', '.join(applied)}" if applied else "schema is up to date")
