"""``conveyor worker --reload``: for development, restart the worker when Python files change.

One worker process runs as a child (the same command without ``--reload``, see
:func:`conveyor.cli._supervisor.child_argv`); the parent watches the working directory and every
``--reload-dir`` with ``watchfiles`` (the ``conveyor[reload]`` extra) for changes to ``*.py``
files outside ``.venv``, ``__pycache__``, ``.git``, ``node_modules`` and the like. On a change it
sends the worker SIGTERM (it finishes or, past its shutdown grace, hands back its running
jobs), waits for it to exit and starts a new one, which imports the changed code.

A worker that exits on its own (a syntax error just saved, a ``--burst`` worker with nothing
left to do) is not restarted until the next change: looping on a broken file helps nobody.
SIGTERM/SIGINT are forwarded as by the ``--processes`` supervisor, and the reloader exits
once the worker has.

The children do not write bytecode (``PYTHONDONTWRITEBYTECODE``): a ``.pyc`` is checked
against its source's size and mtime in whole seconds, so an edit that keeps a file's size
within the second of the previous import would otherwise bring back the old code.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import click

from conveyor.cli._supervisor import ChildProcess, Signals
from conveyor.runtime.waiting import first_of

log = logging.getLogger("conveyor.supervisor")

# Batch the events of one save (editors write, rename and touch) into one restart, quickly:
# the restart must follow an edit within 2 s.
DEBOUNCE_MS: Final = 300
STEP_MS: Final = 30
# Besides watchfiles' own list (.git, .venv, __pycache__, node_modules, .tox, caches, ...).
EXTRA_IGNORED_DIRS: Final = ("venv", ".ruff_cache", ".eggs", "build", "dist")


class Reloader:
    """Runs the worker command ``argv`` as a child and restarts it when ``dirs`` change."""

    def __init__(self, argv: Sequence[str], dirs: Sequence[Path]) -> None:
        self.argv = list(argv)
        self.dirs = [d.resolve() for d in dirs]
        self.child: ChildProcess | None = None
        self.env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}

    async def run(self) -> int:
        try:
            import watchfiles
        except ImportError:
            raise click.ClickException(
                "--reload needs the watchfiles package: pip install 'conveyor[reload]'"
            ) from None

        class Filter(watchfiles.PythonFilter):
            ignore_dirs = (*watchfiles.PythonFilter.ignore_dirs, *EXTRA_IGNORED_DIRS)

        signals = Signals(lambda: [] if self.child is None else [self.child])
        changed = asyncio.Event()
        changes: list[str] = []

        async def watch() -> None:
            # Partly unknown only through its trio event type (trio is not installed).
            async for batch in watchfiles.awatch(  # pyright: ignore[reportUnknownMemberType]
                *self.dirs,
                watch_filter=Filter(),
                debounce=DEBOUNCE_MS,
                step=STEP_MS,
                stop_event=signals.stopping,
            ):
                changes[:] = sorted(path for _, path in batch)
                changed.set()

        signals.install()
        watcher = asyncio.create_task(watch())
        log.info(
            "reloader started: watching %s for *.py changes",
            ", ".join(str(d) for d in self.dirs),
            extra={"event": "supervisor_started", "pid": os.getpid()},
        )
        try:
            await self._loop(signals, changed, changes, watcher)
        finally:
            signals.remove()
            signals.stopping.set()
            await asyncio.gather(watcher, return_exceptions=True)
        log.info("reloader stopped", extra={"event": "supervisor_stopped", "pid": os.getpid()})
        return 0

    async def _loop(
        self,
        signals: Signals,
        changed: asyncio.Event,
        changes: list[str],
        watcher: asyncio.Task[None],
    ) -> None:

        async def watching() -> None:
            await asyncio.wait([watcher])  # unlike the task itself, never cancels the watcher

        while not signals.stopping.is_set():
            changed.clear()  # what changed until now is what the new worker imports
            child = self.child = ChildProcess(0, self.argv)
            await child.start(self.env)
            signals.catch_up(child)
            await first_of(child.wait(), changed.wait(), signals.stopping.wait(), watching())
            if watcher.done() and not signals.stopping.is_set():
                # Without a watcher nothing would ever reload: stop, and say why.
                signals.stop()
                child.log_exit(await child.wait())
                watcher.result()
                raise click.ClickException("the file watcher stopped")
            if changed.is_set() and not signals.stopping.is_set():
                log.info(
                    "%s changed: restarting the worker",
                    self._shown(changes),
                    extra={"event": "reload"},
                )
                child.send(signal.SIGTERM)
            elif not signals.stopping.is_set():
                status = await child.wait()
                child.log_exit(status, logging.WARNING, why="; restarting on the next change")
                await first_of(changed.wait(), signals.stopping.wait(), watching())
                continue
            child.log_exit(await child.wait())

    def _shown(self, paths: Sequence[str]) -> str:
        cwd = str(Path.cwd())
        shown = [os.path.relpath(p, cwd) if p.startswith(cwd) else p for p in paths[:3]]
        more = f" and {len(paths) - 3} more" if len(paths) > 3 else ""
        return ", ".join(shown) + more


def reload(argv: Sequence[str], dirs: Sequence[Path]) -> int:
    """Run a :class:`Reloader` on its own event loop; returns the exit status."""
    return asyncio.run(Reloader(argv, dirs).run())
