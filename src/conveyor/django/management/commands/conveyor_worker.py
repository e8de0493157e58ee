"""``manage.py conveyor_worker``: run the Conveyor worker of a TASKS backend."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.tasks import DEFAULT_TASK_BACKEND_ALIAS

from conveyor import WorkerConfig
from conveyor._logging import configure_logging
from conveyor.django.worker import backend_named, django_worker


class Command(BaseCommand):
    help = (
        "Run a Conveyor worker for the Django tasks of a TASKS backend "
        "(conveyor.django.ConveyorBackend) until SIGTERM or Ctrl-C, or until drained with --burst."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--backend",
            default=DEFAULT_TASK_BACKEND_ALIAS,
            help="the TASKS alias (default: %(default)s)",
        )
        parser.add_argument(
            "--queue",
            action="append",
            default=[],
            dest="queues",
            help="a queue to serve (repeatable; default: the backend's QUEUES, else default)",
        )
        parser.add_argument("--concurrency", type=int, default=5, help="tasks run at once")
        parser.add_argument(
            "--burst", action="store_true", help="exit once the queues have nothing to run"
        )
        parser.add_argument(
            "--shutdown-grace",
            type=float,
            default=25.0,
            help="seconds running tasks get to finish on SIGTERM (default: %(default)s)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            backend = backend_named(options["backend"])
        except TypeError as exc:
            raise CommandError(str(exc)) from None
        verbosity = int(options["verbosity"])
        level = "WARNING" if verbosity == 0 else "DEBUG" if verbosity > 2 else "INFO"
        configure_logging(level=level)
        config = WorkerConfig(
            concurrency=options["concurrency"],
            burst=options["burst"],
            shutdown_grace=options["shutdown_grace"],
        )
        worker = django_worker(backend, queues=options["queues"], config=config)
        worker.run_sync()
