"""``conveyor``: run workers, check handlers, inspect and repair queues."""

from __future__ import annotations

import os
from typing import Any

import click

from conveyor._errors import ConveyorError
from conveyor.cli.cron import cron
from conveyor.cli.dashboard import dashboard
from conveyor.cli.jobs import jobs
from conveyor.cli.queues import migrate, queues, workers
from conveyor.cli.relay import relay
from conveyor.cli.top import top
from conveyor.cli.worker import check, worker


class _Group(click.Group):
    """Reports a :class:`ConveyorError` as ``Error: ...`` with exit code 1, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConveyorError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--url",
    envvar="CONVEYOR_URL",
    default=None,
    help="Backend URL (default: $CONVEYOR_URL, else $REDIS_URL, else sqlite:///conveyor.db).",
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
cli.add_command(migrate)
cli.add_command(relay)
cli.add_command(cron)
cli.add_command(dashboard)
cli.add_command(top)


def main() -> None:
    """The ``conveyor`` console script; always exits (``SystemExit``) with the command's status.

    Click's standalone mode turns ``click.exceptions.Exit`` (a command's failure status, e.g. a
    job that could not be retried) into that exit code, usage errors into 2 and Ctrl-C into 1.
    """
    cli.main(prog_name="conveyor")
