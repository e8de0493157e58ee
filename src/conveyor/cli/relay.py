"""``conveyor relay``: move the jobs an outbox table holds to Redis."""

from __future__ import annotations

import os

import click

from conveyor._logging import configure_logging

OUTBOX_HELP = "The outbox's database: postgresql://user@host/db[?schema=name] or sqlite:///path.db."


@click.command()
@click.option("--from", "source", required=True, metavar="URL", help=OUTBOX_HELP)
@click.option(
    "--to",
    "target",
    metavar="URL",
    help="Where the jobs go, e.g. redis://host:6379/0 (default: --url, $CONVEYOR_URL, $REDIS_URL).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1, max=10_000),
    default=500,
    show_default=True,
    help="Rows moved per batch.",
)
@click.option(
    "--log-format", type=click.Choice(["human", "json"]), default="human", show_default=True
)
@click.option("--log-level", default="INFO", show_default=True)
@click.pass_context
def relay(
    ctx: click.Context,
    source: str,
    target: str | None,
    batch_size: int,
    log_format: str,
    log_level: str,
) -> None:
    """Move committed jobs from an outbox table to Redis until SIGTERM/SIGINT.

    Creates the outbox table when it is missing. Stopping finishes the batch in hand; a relay
    killed at any point loses no job and doubles none (moved again, a job Redis already has is a
    duplicate). Several relays may run on one PostgreSQL outbox.
    """
    from conveyor.outbox import Relay

    given: str | None = ctx.obj.get("url") if ctx.obj else None
    url = target or given or os.environ.get("CONVEYOR_URL") or os.environ.get("REDIS_URL")
    if not url:
        raise click.UsageError("where should the jobs go? pass --to redis://host:6379/0")
    configure_logging(log_level, log_format)
    Relay(source, url, batch_size=batch_size).run_sync()
