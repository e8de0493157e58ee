"""``--metrics-port`` and ``--metrics-host`` of ``conveyor worker`` (see :mod:`conveyor.metrics`).

Kept apart from the command so the options read as one piece; prometheus_client is imported only
when the flag is given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from conveyor._worker import Worker

F = TypeVar("F", bound=Callable[..., Any])


def metrics_options(command: F) -> F:
    command = click.option(
        "--metrics-host",
        default="0.0.0.0",
        show_default=True,
        help="Address the metrics server listens on (all interfaces, so that Prometheus and "
        "the kubelet can reach it; 127.0.0.1 keeps it on this machine).",
    )(command)
    return click.option(
        "--metrics-port",
        type=click.IntRange(0, 65535),
        metavar="PORT",
        help="Serve Prometheus metrics on http://HOST:PORT/metrics, and the /healthz and "
        "/readyz probes (needs: pip install 'conveyor[metrics]').",
    )(command)


def start_metrics(worker: Worker, port: int | None, host: str) -> None:
    """Serve ``worker``'s metrics if a port was given."""
    if port is None:
        return
    try:
        from conveyor.metrics import instrument
    except ImportError as exc:
        raise click.ClickException(f"--metrics-port: {exc}") from exc
    instrument(worker, port=port, host=host)
