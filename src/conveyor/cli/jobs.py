"""``conveyor jobs ls|show|retry|cancel|purge``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from conveyor._queue import Queue
from conveyor.cli._common import (
    change_as_dict,
    echo_json,
    job_as_dict,
    parse_duration,
    print_table,
    progress,
    run_with_queue,
    state_cell,
    stop_on_interrupt,
    when,
)
from conveyor.drivers.records import ChangeResult, ChangeStatus, JobState

_STATES = click.Choice([s.value for s in JobState])


@click.group()
def jobs() -> None:
    """Inspect and repair jobs.

    A job id of your own that begins with "-" goes after "--", or it reads as an option:
    conveyor jobs show -- -my-id (ids Conveyor makes never begin with "-").
    """


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
                state_cell(i.state),
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


_CHANGED = (ChangeStatus.OK, ChangeStatus.CANCEL_REQUESTED)


def _print_changes(results: list[ChangeResult], verb: str) -> bool:
    """One line per job, refusals on stderr; False if any job was not changed."""
    ok = True
    for r in results:
        if r.status in _CHANGED:
            note = (
                " (running: its worker was asked to stop it)"
                if r.status is ChangeStatus.CANCEL_REQUESTED
                else ""
            )
            click.echo(f"{verb} {r.job_id}{note}")
        else:
            ok = False
            state = f" (state {r.state.value})" if r.state else ""
            click.echo(f"not {verb} {r.job_id}: {r.status.value}{state}", err=True)
    return ok


def _report_json(action: str, results: list[ChangeResult], **extra: Any) -> None:
    changed = sum(r.status in _CHANGED for r in results)
    echo_json(
        {
            "action": action,
            "changed": changed,
            "unchanged": len(results) - changed,
            **extra,
            "results": [change_as_dict(r) for r in results],
        }
    )


@dataclass
class _RetryRun:
    """What ``retry --all-failed`` did: every result, and why it stopped early, if it did."""

    results: list[ChangeResult] = field(default_factory=list[ChangeResult])
    interrupted: bool = False
    limit_reached: bool = False

    @property
    def retried(self) -> int:
        return sum(r.status is ChangeStatus.OK for r in self.results)


@jobs.command("retry")
@click.argument("job_ids", nargs=-1)
@click.option("--all-failed", is_flag=True, help="Retry failed jobs, newest first, in batches.")
@click.option("--queue", help="With --all-failed: only this queue.")
@click.option("--name", help="With --all-failed: only jobs of this name.")
@click.option(
    "--limit",
    type=click.IntRange(1, 1_000_000),
    default=10_000,
    show_default=True,
    help="With --all-failed: retry at most this many.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 5_000),
    default=500,
    show_default=True,
    help="With --all-failed: jobs retried per step (Ctrl-C stops between steps).",
)
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
@click.pass_context
def jobs_retry(
    ctx: click.Context,
    job_ids: tuple[str, ...],
    all_failed: bool,
    queue: str | None,
    name: str | None,
    limit: int,
    batch_size: int,
    as_json: bool,
) -> None:
    """Move failed or cancelled jobs back to queued, with one more attempt.

    Named jobs that cannot be retried (not found, wrong state) make the command exit 1.
    --all-failed works in batches with a progress bar on a terminal; a job that another
    process retried or deleted meanwhile is skipped, not an error. Ctrl-C stops it between
    batches: the jobs retried so far stay retried, the rest stay failed, and it exits 130."""
    if not job_ids and not all_failed:
        raise click.UsageError("name job ids, or pass --all-failed")
    if not all_failed and (queue or name):
        raise click.UsageError("--queue and --name select jobs for --all-failed; pass it too")

    async def go(q: Queue) -> tuple[list[ChangeResult], _RetryRun | None]:
        named = await q.retry(list(job_ids)) if job_ids else []
        run = await _retry_all_failed(q, queue, name, limit, batch_size) if all_failed else None
        return named, run

    named, run = run_with_queue(ctx, go)
    if as_json:
        extra: dict[str, Any] = {}
        if run is not None:
            extra = {"interrupted": run.interrupted, "limit_reached": run.limit_reached}
        _report_json("retry", named + (run.results if run else []), **extra)
    else:
        _print_changes(named, "retried")
        if run is not None:
            _summarize(run)
    if run is not None and run.interrupted:
        raise click.exceptions.Exit(130)
    if any(r.status not in _CHANGED for r in named):
        raise click.exceptions.Exit(1)


async def _retry_all_failed(
    q: Queue, queue: str | None, name: str | None, limit: int, batch_size: int
) -> _RetryRun:
    """Retry failed jobs page by page: list a page older than the last one (a retried job
    leaves the failed state, so the cursor, not the state, moves the scan on), retry its ids
    in one call, until the pages run out, ``limit`` jobs were tried, or Ctrl-C."""
    run = _RetryRun()
    total: int | None = None
    if name is None:  # the counts are per queue and state only
        total = min(limit, (await q.counts(queue)).get(JobState.FAILED, 0))
    with (
        progress("retrying failed jobs", total) as advance,
        stop_on_interrupt("this batch") as stopped,
    ):
        pages = q.list_pages(
            queue=queue, state=JobState.FAILED, name=name, page_size=batch_size, limit=limit
        )
        async for page in pages:
            if stopped():
                break
            run.results += await q.retry([info.id for info in page])
            advance(len(page))
        run.interrupted = stopped()
        run.limit_reached = not run.interrupted and len(run.results) >= limit
    return run


def _summarize(run: _RetryRun) -> None:
    skipped = len(run.results) - run.retried
    line = f"retried {run.retried} failed job(s)"
    if skipped:
        line += f"; skipped {skipped} that another process changed meanwhile"
    if run.interrupted:
        line += "; stopped by Ctrl-C: the rest stay failed"
    elif run.limit_reached:
        line += f"; stopped at --limit {len(run.results)}: run it again for more"
    click.echo(line)


@jobs.command("cancel")
@click.argument("job_ids", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
@click.pass_context
def jobs_cancel(ctx: click.Context, job_ids: tuple[str, ...], as_json: bool) -> None:
    """Cancel waiting jobs; running ones are stopped by their worker.

    Exits 1 if a job could not be cancelled (not found, already finished)."""
    results = run_with_queue(ctx, lambda q: q.cancel(list(job_ids)))
    if as_json:
        _report_json("cancel", results)
    else:
        _print_changes(results, "cancelled")
    if any(r.status not in _CHANGED for r in results):
        raise click.exceptions.Exit(1)


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
@click.option(
    "--batch-size",
    type=click.IntRange(1, 5_000),
    default=500,
    show_default=True,
    help="Jobs deleted per step (Ctrl-C stops between steps).",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
@click.pass_context
def jobs_purge(
    ctx: click.Context,
    states: tuple[str, ...],
    queue: str | None,
    older_than: str | None,
    batch_size: int,
    yes: bool,
    as_json: bool,
) -> None:
    """Delete finished jobs (failed by default), newest first, in batches.

    A progress bar shows on a terminal. Ctrl-C stops it between batches (exit 130): the jobs
    deleted so far are gone, the rest stay. A job retried meanwhile is left alone. The
    question goes to stderr, so --json output stays clean."""
    chosen = states or ("failed",)
    age = parse_duration(older_than) if older_than else None
    scope = f"{'/'.join(chosen)} jobs" + (f" of queue {queue}" if queue else "")
    if age is not None:
        scope += f" finished more than {older_than} ago"
    if not yes:
        click.confirm(f"Delete all {scope}?", abort=True, err=True)
    wanted = tuple(JobState(s) for s in chosen)
    n, interrupted = run_with_queue(ctx, lambda q: _purge(q, wanted, queue, age, batch_size))
    if as_json:
        echo_json(
            {
                "action": "purge",
                "deleted": n,
                "states": list(chosen),
                "queue": queue,
                "older_than_seconds": None if age is None else age.total_seconds(),
                "interrupted": interrupted,
            }
        )
    else:
        stopped = "; stopped by Ctrl-C: the rest stay" if interrupted else ""
        click.echo(f"deleted {n} {scope}{stopped}")
    if interrupted:
        raise click.exceptions.Exit(130)


async def _purge(
    q: Queue, states: tuple[JobState, ...], queue: str | None, age: timedelta | None, batch: int
) -> tuple[int, bool]:
    """Delete page by page: list a page of jobs in ``states`` older than the last page, delete
    those that finished before the cut-off in one call. Each call is atomic and short, so
    workers writing to the same store are not held up for the whole purge, and Ctrl-C can stop
    between two. Returns how many were deleted and whether Ctrl-C stopped it."""
    cutoff = None if age is None else datetime.now(UTC) - age
    counts = await q.counts(queue)
    total = sum(counts.get(state, 0) for state in states)
    deleted = 0
    what = f"deleting {'/'.join(s.value for s in states)} jobs"
    with progress(what, total) as advance, stop_on_interrupt("this batch") as stopped:
        async for page in q.list_pages(queue=queue, state=states, page_size=batch):
            if stopped():
                break
            ids = [
                info.id
                for info in page
                if cutoff is None or (info.finished_at is not None and info.finished_at < cutoff)
            ]
            if ids:
                results = await q.delete(ids)
                deleted += sum(r.status is ChangeStatus.OK for r in results)
            advance(len(page))
        return deleted, stopped()
