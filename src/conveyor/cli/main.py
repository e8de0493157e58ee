"""``conveyor``: run workers, check handlers, inspect and repair queues."""

from __future__ import annotations

import os
import sys

import click

from conveyor._errors import ConveyorError
from conveyor.cli.jobs import jobs
from conveyor.cli.queues import queues, workers
from conveyor.cli.worker import check, worker


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--url",
    envvar="CONVEYOR_URL",
    default=None,
    help="Backend URL (default: $CONVEYOR_URL, else sqlite:///conveyor.db).",
)
@click.version_option(package_name="conveyor")
@click.pass_context
def cli(ctx: click.Context, url: str | None) -> None:
    """Conveyor: typed background jobs."""
    ctx.ensure_object(dict)
    ctx.obj["url"] = url
    if url:
        # A worker module usually builds its Queue from $CONVEYOR_URL at import time.
        os.environ["CONVEYOR_URL"] = url


cli.add_command(worker)
cli.add_command(check)
cli.add_command(jobs)
cli.add_command(queues)
cli.add_command(workers)


def main() -> None:
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ConveyorError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
