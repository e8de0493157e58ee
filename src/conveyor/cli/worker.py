"""``conveyor worker`` and ``conveyor check``."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import click

from conveyor._errors import InvalidJobDefinition, MissingHandlers
from conveyor._logging import configure_logging
from conveyor.cli._common import load_worker
from conveyor.cli._metrics import metrics_options, start_metrics
from conveyor.cli._supervisor import child_argv, follow_supervisor, ports_of
from conveyor.drivers.protocol import Capability
from conveyor.runtime.gc_tuning import MAX_GC_THRESHOLD, WORKER_GC_THRESHOLD
from conveyor.runtime.prefetch import PrefetchSetting, check_prefetch


def _prefetch_option(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> PrefetchSetting | None:
    if value is None:
        return None
    if value == "auto":
        return "auto"
    try:
        number = int(value)
        check_prefetch(number)
    except ValueError:
        raise click.BadParameter(f"expected 'auto' or a whole number >= 0, got {value!r}") from None
    return number


@click.command()
@click.argument("target")
@click.option("-c", "--concurrency", type=click.IntRange(min=1), help="Jobs run at once.")
@click.option(
    "--prefetch",
    callback=_prefetch_option,
    metavar="auto|N",
    help="Jobs leased beyond the concurrency, to start as soon as a slot frees: 'auto' "
    "(the default: on Redis, up to the concurrency while jobs are short), N, or 0 (never).",
)
@click.option("-q", "--queue", "queues", multiple=True, help="Queue to serve (repeatable).")
@click.option("--burst", is_flag=True, help="Exit once the queues have nothing left to run.")
@click.option("--shutdown-grace", type=click.FloatRange(min=0), help="Seconds to finish jobs.")
@click.option(
    "--lease",
    type=click.FloatRange(min=0.1),
    help="Lease length in seconds (a configured renewal interval is scaled along).",
)
@click.option(
    "--log-format", type=click.Choice(["human", "json"]), default="human", show_default=True
)
@click.option("--log-level", default="INFO", show_default=True)
@click.option(
    "--relay-from",
    metavar="URL",
    help="Also move the jobs of this outbox (postgresql://... or sqlite:///...) to the "
    "worker's store, as `conveyor relay` does.",
)
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    help="Run this many worker processes under a supervisor that restarts any that dies "
    "(default: one worker, in this process).",
)
@click.option(
    "--gc-threshold",
    type=click.IntRange(min=0, max=MAX_GC_THRESHOLD),
    default=WORKER_GC_THRESHOLD,
    show_default=True,
    help="The garbage collector's first-generation threshold while the worker runs (objects "
    "that exist at start are frozen); 0 leaves Python's collector as it is.",
)
@click.option("--reload", is_flag=True, help="Restart the worker when *.py files change (dev).")
@click.option(
    "--reload-dir",
    "reload_dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Also watch this directory with --reload (repeatable; the working directory always).",
)
@metrics_options
@click.pass_context
def worker(
    ctx: click.Context,
    target: str,
    concurrency: int | None,
    prefetch: PrefetchSetting | None,
    queues: tuple[str, ...],
    burst: bool,
    shutdown_grace: float | None,
    lease: float | None,
    log_format: str,
    log_level: str,
    relay_from: str | None,
    processes: int | None,
    gc_threshold: int,
    reload: bool,
    reload_dirs: tuple[Path, ...],
    metrics_port: int | None,
    metrics_host: str,
) -> None:
    """Run the Worker at TARGET (module:attribute) until SIGTERM/SIGINT.

    The first signal stops fetching and lets running jobs finish within the shutdown grace;
    a second one hands them back to the queue at once. With --processes N, a supervisor runs
    N such workers as child processes and forwards the signals to them.
    """
    configure_logging(log_level, log_format)
    if reload or reload_dirs or processes is not None:
        sys.exit(_supervise(ctx, processes, reload, reload_dirs))
    follow_supervisor()
    w = load_worker(target)
    w.queue.driver.require(Capability.SHARED_ACROSS_PROCESSES, "by a worker process")
    changes: dict[str, object] = {}
    if concurrency is not None:
        changes["concurrency"] = concurrency
    if prefetch is not None:
        changes["prefetch"] = prefetch
    if queues:
        changes["queues"] = queues
    if burst:
        changes["burst"] = True
    if shutdown_grace is not None:
        changes["shutdown_grace"] = shutdown_grace
    if gc_threshold and w.config.gc_threshold is None:  # an app's own setting wins
        changes["gc_threshold"] = gc_threshold
    if lease is not None:
        changes["lease_seconds"] = lease
        renew = w.config.lease_renew_interval
        if renew is not None:
            # Keep the configured renewal rate relative to the lease: a renewal interval tuned
            # for a longer lease would let the new, shorter one lapse and the job run twice.
            changes["lease_renew_interval"] = renew * lease / w.config.lease_seconds
    if changes:
        w.config = dataclasses.replace(w.config, **changes)  # type: ignore[arg-type]
    if relay_from:
        from conveyor.outbox import Relay

        w.run_beside("outbox relay", Relay(relay_from, w.queue).run)
    start_metrics(w, metrics_port, metrics_host)
    try:
        w.run_sync()
    except (MissingHandlers, InvalidJobDefinition) as exc:
        raise click.ClickException(str(exc)) from exc


def _supervise(
    ctx: click.Context, processes: int | None, reload: bool, reload_dirs: tuple[Path, ...]
) -> int:
    """Run the worker as child processes: ``--processes`` N of them, or one under ``--reload``."""
    if reload_dirs and not reload:
        raise click.UsageError("--reload-dir only applies with --reload")
    if reload:
        if processes is not None and processes > 1:
            raise click.UsageError(
                f"--reload runs one worker process; it cannot be combined with --processes "
                f"{processes} (drop one of them)"
            )
        from conveyor.cli._reload import reload as run_reloading

        return run_reloading(child_argv(ctx, 0), [Path.cwd(), *reload_dirs])
    from conveyor.cli._supervisor import supervise

    assert processes is not None
    return supervise(
        processes,
        lambda index: child_argv(ctx, index),
        burst=bool(ctx.params.get("burst")),
        note_for=lambda index: ports_of(ctx, index),
    )


@click.command()
@click.argument("target")
def check(target: str) -> None:
    """Fail if a job definition served by the Worker at TARGET has no handler, or a
    rate-limited one shares its queue."""
    w = load_worker(target)
    missing = w.registry.missing()
    for definition in w.registry.definitions():
        mark = "missing" if definition.name in missing else "ok"
        limit = definition.rate_limit
        shown = f", rate limit {limit.count} per {limit.per:g}s" if limit else ""
        click.echo(f"{mark:8} {definition.name}  (queue {definition.queue}{shown})")
    if missing:
        raise click.ClickException(str(MissingHandlers(missing)))
    try:
        w.rate_limits()
    except InvalidJobDefinition as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{len(w.registry.names())} handler(s) registered, none missing")
