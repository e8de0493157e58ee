"""``conveyor queues ls|pause|resume``, ``conveyor workers`` and ``conveyor migrate``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click

from conveyor._queue import Queue
from conveyor.cli._common import echo_json, print_table, run_with_queue, when, worker_as_dict
from conveyor.drivers.records import WAITING_STATES, JobState, QueueInfo, WorkerInfo

_COLUMNS = [
    JobState.QUEUED,
    JobState.SCHEDULED,
    JobState.ACTIVE,
    JobState.RETRYING,
    JobState.COMPLETED,
    JobState.FAILED,
    JobState.CANCELLED,
]


@click.group()
def queues() -> None:
    """List, pause and resume queues."""


@queues.command("ls")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per queue, in a list.")
@click.pass_context
def queues_ls(ctx: click.Context, as_json: bool) -> None:
    """Queues with their job counts by state and the live workers serving each.

    Warns (on stderr) of a running queue whose jobs wait with no live worker serving it."""

    async def fetch(q: Queue) -> tuple[list[QueueInfo], list[WorkerInfo]]:
        return await q.queues(), await q.workers()

    infos, live = run_with_queue(ctx, fetch)
    if as_json:
        echo_json([queue_as_dict(info, live) for info in infos])
        return
    summaries = [queue_as_dict(info, live) for info in infos]
    rows = [
        [s["name"], "paused" if s["paused"] else "running", s["workers"]]
        + [s["counts"][state.value] for state in _COLUMNS]
        for s in summaries
    ]
    styles = ["yellow" if s["unserved"] else "dim" if s["paused"] else "" for s in summaries]
    print_table(
        ["queue", "status", "workers"] + [s.value for s in _COLUMNS], rows, row_styles=styles
    )
    for s in summaries:
        if s["unserved"]:
            click.echo(
                f"warning: queue {s['name']} has {s['waiting']} job(s) waiting and no live "
                "worker serving it",
                err=True,
            )


def queue_as_dict(info: QueueInfo, live: list[WorkerInfo]) -> dict[str, Any]:
    """A queue as ``queues ls --json`` and ``top --json`` print it: every state is counted
    (0 when empty); ``unserved`` marks a running queue with waiting jobs and no live worker."""
    serving = sum(info.name in w.queues for w in live)
    waiting = sum(info.counts.get(s, 0) for s in WAITING_STATES)
    return {
        "name": info.name,
        "paused": info.paused,
        "workers": serving,
        "counts": {s.value: info.counts.get(s, 0) for s in JobState},
        "waiting": waiting,
        "unserved": bool(waiting and not serving and not info.paused),
    }


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
@click.option("--json", "as_json", is_flag=True, help="One JSON object per worker, in a list.")
@click.pass_context
def workers(ctx: click.Context, as_json: bool) -> None:
    """Live workers (those whose heartbeat has not expired)."""
    live = run_with_queue(ctx, lambda q: q.workers())
    if as_json:
        echo_json([worker_as_dict(w) for w in live])
        return
    rows = [
        [w.id, ",".join(w.queues), w.concurrency, w.running, w.processed, when(_at(w.started_at))]
        for w in live
    ]
    print_table(["worker", "queues", "concurrency", "running", "processed", "started"], rows)


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


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
