"""``conveyor worker --processes N``: one supervisor process keeping N worker processes running.

**Children are commands, not multiprocessing.** Each child is ``python -m conveyor worker
TARGET`` with this command's options minus the supervisor's own (:func:`child_argv`), started
with :mod:`asyncio.subprocess`. So a child is exactly the worker one would start by hand: it
imports TARGET itself (nothing is pickled, and the supervisor never imports the application,
so it stays small and cannot be broken by it), it gets a fresh interpreter instead of a fork of
one with threads and an event loop, and its exit status says how it ended. The supervisor only
starts, signals, reaps and restarts children; it never touches the store.

**Signals.** Each child runs in a session of its own (``setsid``), so a Ctrl-C at the terminal
(a SIGINT to the whole foreground process group) reaches only the supervisor, which forwards it
once: a signal that reached a child both directly and forwarded would count twice, and a worker
takes a second signal as "hand back running jobs now". A session rather than just a process
group: a child is then no background job of the terminal (``stty tostop`` would stop it at its
first log line), and the kernel's autogroup scheduling gives it a share of the CPU of its own,
as a worker started on its own would have, instead of splitting the supervisor's. Every
SIGTERM/SIGINT the supervisor receives is forwarded to every child: the first stops them
fetching and lets running jobs finish within the shutdown grace; a second one makes them hand
running jobs back at once. The supervisor waits for every child to exit (each worker bounds its
own shutdown by its grace) and exits with status 0 when all of them stopped cleanly. Under
systemd use ``KillMode=mixed``, so that only the supervisor gets the SIGTERM.

**Restarts.** A child that exits while the supervisor is not stopping (a crash, SIGKILL, the
OOM killer) is restarted after a pause: :data:`FIRST_DELAY`, doubled for each further exit
within :data:`STABLE_SECONDS` of its start, up to :data:`MAX_DELAY`. Jobs it was running are
rescued by the other workers once their leases expire, as for any lost worker. So is a child
that exits with status 0 (someone sent it a signal), except under ``--burst``, where that
means its queues are drained: the supervisor then exits once every child has.

**Giving up.** A child that exits within :data:`STABLE_SECONDS` of its start
:data:`MAX_QUICK_EXITS` times in a row (an import error in TARGET, a bad option, a handler
that kills its process at once) cannot be helped by restarting it: the supervisor logs why,
stops the other children gracefully and exits with status 1 rather than loop forever.

**Orphans.** On Linux each child asks the kernel for a SIGTERM when the supervisor dies
(``PR_SET_PDEATHSIG``, see :func:`follow_supervisor`), so a supervisor killed with SIGKILL does
not leave workers running unsupervised: they shut down as on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Final

import click
from click.core import ParameterSource

from conveyor.runtime.waiting import first_of

log = logging.getLogger("conveyor.supervisor")

SUPERVISOR_ENV: Final = "CONVEYOR_SUPERVISOR_PID"
FIRST_DELAY: Final = 0.5
MAX_DELAY: Final = 30.0
STABLE_SECONDS: Final = 10.0
MAX_QUICK_EXITS: Final = 5

# Options of ``conveyor worker`` that belong to the supervisor, never passed to a child.
SUPERVISOR_ONLY: Final = frozenset({"processes", "reload", "reload_dirs"})
# Options naming a port: child i gets the given port plus i, so N processes never share one.
PORT_OPTIONS: Final = frozenset({"metrics_port"})

_PR_SET_PDEATHSIG: Final = 1


def child_argv(ctx: click.Context, index: int) -> list[str]:
    """The command of worker process ``index`` (0-based): ``python -m conveyor worker TARGET``
    with every option given to this command except the supervisor's own, and each port
    option (:data:`PORT_OPTIONS`, e.g. ``--metrics-port P``) offset by ``index``.

    Options are rebuilt from their parsed values rather than copied from ``sys.argv``, so
    abbreviations, ``--opt=value`` and options added to the command later all carry over.
    The group's ``--url`` needs no copy: the CLI exports it as ``$CONVEYOR_URL``, which the
    child inherits."""
    arguments: list[str] = []
    options: list[str] = []
    for param in ctx.command.params:
        name = param.name
        if name in SUPERVISOR_ONLY:
            continue
        value = ctx.params.get(name)
        if isinstance(param, click.Argument):
            arguments += [str(v) for v in value or ()] if param.multiple else [str(value)]
            continue
        if not isinstance(param, click.Option):
            continue
        if ctx.get_parameter_source(name) in (None, ParameterSource.DEFAULT) or value is None:
            continue
        flag = max(param.opts, key=len)  # the long form
        if param.is_flag:
            if value:
                options.append(flag)
            elif param.secondary_opts:
                options.append(max(param.secondary_opts, key=len))
        elif param.multiple:
            for item in value:
                options += [flag, str(item)]
        elif name in PORT_OPTIONS:
            options += [flag, str(int(value) + index)]
        else:
            options += [flag, str(value)]
    return [sys.executable, "-m", "conveyor", ctx.info_name or "worker", *arguments, *options]


def ports_of(ctx: click.Context, index: int) -> str:
    """What a child listens on, for the log line of its start (empty when nothing)."""
    shown = [
        f"{name.replace('_', ' ')} {int(ctx.params[name]) + index}"
        for name in sorted(PORT_OPTIONS)
        if ctx.params.get(name) is not None
    ]
    return f" ({', '.join(shown)})" if shown else ""


def follow_supervisor() -> None:
    """In a worker started by a supervisor: ask the kernel for a SIGTERM when the supervisor
    dies (Linux only), so it never runs on unsupervised, and exit at once if it is already
    gone. Does nothing in a worker started otherwise."""
    raw = os.environ.pop(SUPERVISOR_ENV, None)  # not inherited by the worker's own children
    if raw is None or not raw.isdigit():
        return
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    # Checked after the request: a supervisor that died before it took effect is seen here.
    if os.getppid() != int(raw):
        raise click.ClickException(f"the supervisor (pid {raw}) that started this worker is gone")


def describe_exit(status: int) -> str:
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exited with status {status}"


class ChildProcess:
    """One worker process: started, signalled and reaped by a supervisor."""

    def __init__(self, index: int, argv: Sequence[str], note: str = "") -> None:
        self.index = index
        self.argv = list(argv)
        self.note = note
        self.process: asyncio.subprocess.Process | None = None
        self.started_at = 0.0

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    async def start(self, env: Mapping[str, str]) -> None:
        """Start the child in a session of its own (see the module docstring)."""
        self.process = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=subprocess.DEVNULL,
            env={**env, SUPERVISOR_ENV: str(os.getpid())},
            start_new_session=True,
        )
        self.started_at = time.monotonic()
        log.info(
            "worker process %d started%s",
            self.index,
            self.note,
            extra={"event": "process_started", "child": self.index, "pid": self.process.pid},
        )

    def send(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)

    async def wait(self) -> int:
        """Wait for the child to exit; returns its status (negative: killed by that signal)."""
        assert self.process is not None
        return await self.process.wait()

    def lived(self) -> float:
        return time.monotonic() - self.started_at

    def log_exit(self, status: int, level: int = logging.INFO, why: str = "") -> None:
        log.log(
            level,
            "worker process %d %s after %.1fs%s",
            self.index,
            describe_exit(status),
            self.lived(),
            why,
            extra={
                "event": "process_exited",
                "child": self.index,
                "pid": self.pid,
                "exit_status": status,
            },
        )


class Signals:
    """SIGTERM/SIGINT handling shared by the supervisors: every signal is forwarded to every
    running child; the first one also sets :attr:`stopping`."""

    def __init__(self, children: Callable[[], Sequence[ChildProcess]]) -> None:
        self.children = children
        self.stopping = asyncio.Event()
        self.received: list[signal.Signals] = []

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.on_signal, sig)

    def remove(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)

    def on_signal(self, sig: signal.Signals) -> None:
        again = self.stopping.is_set()
        log.warning(
            "%s received: %s",
            sig.name,
            "forwarded; the worker processes hand back running jobs now"
            if again
            else "forwarded; the worker processes finish running jobs, then exit",
            extra={"event": "shutdown"},
        )
        forwarded = sig
        if again and self.received and sig == self.received[0]:
            # Two of one signal that reach a child before it handled the first merge into one
            # (standard signals are not queued), and a busy machine can hold a child off the
            # CPU that long: the second goes as the other stop signal, which a worker takes
            # as "hand back now" all the same.
            forwarded = signal.SIGINT if sig == signal.SIGTERM else signal.SIGTERM
        if len(self.received) < 2:  # all a child started late needs (see catch_up)
            self.received.append(forwarded)
        self.stopping.set()
        for child in self.children():
            child.send(forwarded)

    def stop(self) -> None:
        """Stop the children as one SIGTERM would (used when giving up)."""
        if not self.stopping.is_set():
            self.received.append(signal.SIGTERM)
            self.stopping.set()
            for child in self.children():
                child.send(signal.SIGTERM)

    def catch_up(self, child: ChildProcess) -> None:
        """Give a child started while a signal arrived the signals the others got."""
        for sig in self.received[:2]:
            child.send(sig)


# A worker stopped by a forwarded signal exits 0; one that got it before installing its
# handlers (it had fetched nothing yet) dies of it, which is as clean.
_CLEAN: Final = frozenset({0, -signal.SIGTERM, -signal.SIGINT})


class ProcessSupervisor:
    """Keeps ``processes`` worker processes running until SIGTERM/SIGINT (module docstring)."""

    def __init__(
        self,
        processes: int,
        argv_for: Callable[[int], Sequence[str]],
        *,
        burst: bool = False,
        note_for: Callable[[int], str] = lambda index: "",
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.processes = processes
        self.argv_for = argv_for
        self.burst = burst
        self.note_for = note_for
        self.env = dict(os.environ if env is None else env)
        self.children: dict[int, ChildProcess] = {}
        self.failure: str | None = None
        self.unclean: list[str] = []
        self._signals: Signals | None = None

    async def run(self) -> int:
        """Run until every child has exited; the exit status for the supervisor process."""
        signals = self._signals = Signals(lambda: list(self.children.values()))
        signals.install()
        log.info(
            "supervisor started: %d worker process(es)",
            self.processes,
            extra={"event": "supervisor_started", "pid": os.getpid()},
        )
        try:
            await asyncio.gather(*(self._keep(i, signals) for i in range(self.processes)))
        finally:
            signals.remove()
        if self.failure is not None:
            return 1
        for problem in self.unclean:
            log.error("%s", problem, extra={"event": "supervisor_stopped"})
        log.info(
            "supervisor stopped%s",
            "" if not self.unclean else " (not every worker process stopped cleanly)",
            extra={"event": "supervisor_stopped", "pid": os.getpid()},
        )
        return 1 if self.unclean else 0

    async def _keep(self, index: int, signals: Signals) -> None:
        """Keep worker process ``index`` running: start it, restart it when it dies."""
        quick_exits = 0
        while not signals.stopping.is_set():
            child = ChildProcess(index, self.argv_for(index), self.note_for(index))
            try:
                await child.start(self.env)
            except OSError as exc:
                self._give_up(f"cannot start worker process {index} ({child.argv[0]}): {exc}")
                return
            self.children[index] = child
            signals.catch_up(child)
            status = await child.wait()
            if signals.stopping.is_set():
                child.log_exit(status)
                if status not in _CLEAN:
                    self.unclean.append(
                        f"worker process {index} (pid {child.pid}) {describe_exit(status)} "
                        "while stopping"
                    )
                return
            if status == 0 and self.burst:
                child.log_exit(status, why=": its queues are drained (--burst)")
                return
            quick = child.lived() < STABLE_SECONDS
            quick_exits = quick_exits + 1 if quick else 0
            if quick_exits >= MAX_QUICK_EXITS:
                child.log_exit(status, logging.ERROR)
                self._give_up(
                    f"worker process {index} exited within {STABLE_SECONDS:g}s of starting "
                    f"{quick_exits} times in a row (last: {describe_exit(status)}); giving up "
                    "instead of restarting it again: its output above says why"
                )
                return
            delay = min(FIRST_DELAY * 2 ** max(quick_exits - 1, 0), MAX_DELAY)
            child.log_exit(status, logging.WARNING, why=f" unexpectedly; restarting in {delay:g}s")
            await first_of(asyncio.sleep(delay), signals.stopping.wait())

    def _give_up(self, message: str) -> None:
        if self.failure is None:
            self.failure = message
            log.error("%s", message, extra={"event": "supervisor_gave_up"})
        assert self._signals is not None
        self._signals.stop()


def supervise(
    processes: int,
    argv_for: Callable[[int], Sequence[str]],
    *,
    burst: bool = False,
    note_for: Callable[[int], str] = lambda index: "",
) -> int:
    """Run a :class:`ProcessSupervisor` on its own event loop; returns the exit status."""
    supervisor = ProcessSupervisor(processes, argv_for, burst=burst, note_for=note_for)
    return asyncio.run(supervisor.run())
