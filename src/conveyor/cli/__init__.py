"""The ``conveyor`` command line."""

from conveyor.cli.main import cli, main

__all__ = ["cli", "main"]
