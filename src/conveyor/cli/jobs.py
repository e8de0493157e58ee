"""``conveyor jobs ls|show|retry|cancel|purge``."""

from __future__ import annotations

import click

from conveyor._queue import Queue
from conveyor.cli._common import (
    echo_json,
    job_as_dict,
    parse_duration,
    print_table,
    run_with_queue,
    when,
)
from conveyor.drivers.records import ChangeResult, ChangeStatus, JobState

_STATES = click.Choice([s.value for s in JobState])


@click.group()
def jobs() -> None:
    """Inspect and repair jobs."""


@jobs.command("ls")
@click.option("--queue", help="Only this queue.")
@click.option("--state", "states", type=_STATES, multiple=True, help="Only these states.")
@click.option("--name", help="Only jobs of this name.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--before", "before_seq", type=int, help="Page: jobs older than this seq.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def jobs_ls(
    ctx: click.Context,
    queue: str | None,
    states: tuple[str, ...],
    name: str | None,
    limit: int,
    before_seq: int | None,
    as_json: bool,
) -> None:
    """List jobs, newest first."""
    infos = run_with_queue(
        ctx,
        lambda q: q.list_jobs(
            queue=queue, state=states or None, name=name, before_seq=before_seq, limit=limit
        ),
    )
    if as_json:
        echo_json([job_as_dict(i) for i in infos])
        return
    rows: list[list[object]] = []
    for i in infos:
        error = (i.error or "").splitlines()[0][:60] if i.error else ""
        rows.append(
            [
                i.seq,
                i.id,
                i.name,
                i.queue,
                i.state.value,
                f"{i.attempt}/{i.max_attempts}",
                when(i.finished_at or i.run_at),
                error,
            ]
        )
    print_table(["seq", "id", "name", "queue", "state", "attempt", "time", "error"], rows)
    if len(infos) == limit:
        click.echo(f"(more: --before {infos[-1].seq})")


@jobs.command("show")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def jobs_show(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """Everything about one job, including its last error and traceback."""
    info = run_with_queue(ctx, lambda q: q.get(job_id))
    if info is None:
        raise click.ClickException(f"job {job_id!r} not found")
    data = job_as_dict(info)
    if as_json:
        echo_json(data)
        return
    error = data.pop("error")
    error_attempt = data.pop("error_attempt")
    history = data.pop("errors")
    if data.pop("cancel_requested"):
        data["state"] = f"{data['state']} (cancel requested: its worker is stopping it)"
    progress, message = data.pop("progress"), data.pop("progress_message")
    at = data.pop("progress_at")
    if progress is not None:
        data["progress"] = f"{progress:.0%}" + (f" {message}" if message else "") + f" (at {at})"
    for optional in ("expires_at", "group"):
        if data[optional] is None:
            del data[optional]
    for key, value in data.items():
        click.echo(f"{key:>12}: {value}")
    if len(history) > 1 or (history and error is None):
        click.echo("     history:")
        for entry in history:
            first = entry["error"].splitlines()[0] if entry["error"] else ""
            click.echo(f"    attempt {entry['attempt']} at {entry['at']}: {first}")
    if error:
        which = f" (attempt {error_attempt})" if error_attempt is not None else ""
        click.echo(f"  last error{which}:")
        for line in error.splitlines():
            click.echo(f"    {line}")


def _report(results: list[ChangeResult], verb: str) -> None:
    failures = 0
    for r in results:
        if r.status in (ChangeStatus.OK, ChangeStatus.CANCEL_REQUESTED):
            note = (
                " (running: its worker was asked to stop it)"
                if r.status is ChangeStatus.CANCEL_REQUESTED
                else ""
            )
            click.echo(f"{verb} {r.job_id}{note}")
        else:
            failures += 1
            state = f" (state {r.state.value})" if r.state else ""
            click.echo(f"not {verb} {r.job_id}: {r.status.value}{state}", err=True)
    if failures:
        raise click.exceptions.Exit(1)


@jobs.command("retry")
@click.argument("job_ids", nargs=-1)
@click.option("--all-failed", is_flag=True, help="Retry every failed job (of --queue).")
@click.option("--queue", help="With --all-failed: only this queue.")
@click.pass_context
def jobs_retry(
    ctx: click.Context, job_ids: tuple[str, ...], all_failed: bool, queue: str | None
) -> None:
    """Move failed or cancelled jobs back to queued, with one more attempt."""
    if not job_ids and not all_failed:
        raise click.UsageError("name job ids, or pass --all-failed")

    async def go(q: Queue) -> list[ChangeResult]:
        ids = list(job_ids)
        if all_failed:
            ids += await _all_ids(q, queue, JobState.FAILED)
        return await q.retry(ids)

    _report(run_with_queue(ctx, go), "retried")


async def _all_ids(q: Queue, queue: str | None, state: JobState) -> list[str]:
    ids: list[str] = []
    before: int | None = None
    while True:
        page = await q.list_jobs(queue=queue, state=state, before_seq=before, limit=500)
        ids += [i.id for i in page]
        if len(page) < 500:
            return ids
        before = page[-1].seq


@jobs.command("cancel")
@click.argument("job_ids", nargs=-1, required=True)
@click.pass_context
def jobs_cancel(ctx: click.Context, job_ids: tuple[str, ...]) -> None:
    """Cancel waiting jobs; running ones are stopped by their worker."""
    _report(run_with_queue(ctx, lambda q: q.cancel(list(job_ids))), "cancelled")


@jobs.command("purge")
@click.option(
    "--state",
    "states",
    type=click.Choice(["failed", "completed", "cancelled"]),
    multiple=True,
    help="States to delete (default: failed).",
)
@click.option("--queue", help="Only this queue.")
@click.option("--older-than", help="Only jobs finished longer ago than this (e.g. 7d).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def jobs_purge(
    ctx: click.Context,
    states: tuple[str, ...],
    queue: str | None,
    older_than: str | None,
    yes: bool,
) -> None:
    """Delete finished jobs (failed by default)."""
    chosen = states or ("failed",)
    age = parse_duration(older_than) if older_than else None
    scope = f"{'/'.join(chosen)} jobs" + (f" of queue {queue}" if queue else "")
    if age is not None:
        scope += f" finished more than {older_than} ago"
    if not yes:
        click.confirm(f"Delete all {scope}?", abort=True)
    n = run_with_queue(ctx, lambda q: q.purge(queue=queue, states=chosen, older_than=age))
    click.echo(f"deleted {n} {scope}")
