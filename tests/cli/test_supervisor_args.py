"""The command each worker process of ``conveyor worker --processes N`` runs: the same options,
parsed and given back, minus the supervisor's own; a port option offset per process."""

from __future__ import annotations

import signal
import sys

import click

from conveyor.cli._supervisor import child_argv, describe_exit, ports_of
from conveyor.cli.worker import worker

PREFIX = [sys.executable, "-m", "conveyor", "worker"]


def test_a_child_gets_every_given_option_but_the_supervisors() -> None:
    ctx = worker.make_context(
        "worker",
        [
            "app:worker",
            "--processes=3",
            "-c",
            "7",
            "-q",
            "emails",
            "--queue",
            "webhooks",
            "--burst",
            "--shutdown-grace",
            "0.5",
            "--log-format",
            "json",
        ],
    )
    assert child_argv(ctx, 2) == [
        *PREFIX,
        "app:worker",
        "--concurrency",
        "7",
        "--queue",
        "emails",
        "--queue",
        "webhooks",
        "--burst",
        "--shutdown-grace",
        "0.5",
        "--log-format",
        "json",
    ]


def test_options_left_at_their_defaults_are_left_to_the_child() -> None:
    ctx = worker.make_context("worker", ["app:worker", "--reload"])
    assert child_argv(ctx, 0) == [*PREFIX, "app:worker"]


def test_a_port_option_is_offset_by_the_process_index() -> None:
    @click.command("worker")
    @click.argument("target")
    @click.option("--metrics-port", type=int)
    @click.option("--processes", type=int)
    def command(target: str, metrics_port: int | None, processes: int | None) -> None:
        raise AssertionError("never invoked")

    ctx = command.make_context(
        "worker", ["app:worker", "--metrics-port", "9100", "--processes", "2"]
    )
    assert child_argv(ctx, 0) == [*PREFIX, "app:worker", "--metrics-port", "9100"]
    assert child_argv(ctx, 1) == [*PREFIX, "app:worker", "--metrics-port", "9101"]
    assert ports_of(ctx, 1) == " (metrics port 9101)"
    assert ports_of(worker.make_context("worker", ["app:worker"]), 1) == ""


def test_exit_statuses_read_as_words() -> None:
    assert describe_exit(0) == "exited with status 0"
    assert describe_exit(2) == "exited with status 2"
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
