"""Chaos driver and checker of the process tests (reliability.md §4.0, §4 (a)).

``Supervisor`` keeps a pool of ``conveyor worker`` subprocesses alive and kills one at a time,
by pid, only among the processes it started, logging each fault with monotonic and wall times.

``check`` is the Jepsen ``total-queue`` style checker adapted to at-least-once delivery: from the
jobs enqueued, the executions in the side ledger (``app.chaos_ledger``), the final job rows and
the fault log it derives lost jobs, unexpected executions, duplicates, and whether every
re-execution is explained by a kill of the process that ran the earlier execution.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import statistics
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from conveyor import JobInfo
from tests.process.harness import Harness, WorkerProcess, wait_for

KILL = "kill"  # SIGKILL
TERM_KILL = "term+kill"  # SIGTERM, then SIGKILL 0.2 s later, inside the grace (sidekiq#4715)
TERM_TO_KILL_SECONDS = 0.2


# -- the fault log ------------------------------------------------------------------------------


@dataclass(slots=True)
class Fault:
    n: int
    pid: int
    mode: str
    mono: float  # when SIGKILL was sent (time.monotonic, comparable with the ledger)
    wall: float
    term_mono: float | None = None  # when SIGTERM was sent, for TERM_KILL
    rc: int | None = None  # the victim's exit status: -9 when the SIGKILL did kill it

    @property
    def killed(self) -> bool:
        return self.rc == -signal.SIGKILL


class Supervisor:
    """Starts workers through the harness and SIGKILLs them; never signals anything else."""

    def __init__(self, harness: Harness, args: Sequence[str], *, target: str, log: Path) -> None:
        self.h = harness
        self.args = tuple(args)
        self.target = target
        self.pool: list[WorkerProcess] = []  # every worker this supervisor started
        self.faults: list[Fault] = []
        self.log = log

    def start(self) -> WorkerProcess:
        proc = self.h.start_worker(*self.args, target=self.target)
        self.pool.append(proc)
        return proc

    def live(self) -> list[WorkerProcess]:
        return [p for p in self.pool if p.alive()]

    def ready(self) -> list[WorkerProcess]:
        return [p for p in self.live() if "worker started" in p.log()]

    def kill_one(self, rng: random.Random, mode: str = KILL) -> Fault:
        """Kill a random worker that has started serving (waiting for one: a worker signalled
        before it installs its handlers dies of the signal itself, which says nothing about
        how Conveyor stops)."""
        assert self.live(), f"no live worker to kill; logs:\n{self.h.logs()}"
        candidates = wait_for(self.ready, timeout=60, what="a worker that has started")
        victim = rng.choice(candidates)
        term_mono = None
        if mode == TERM_KILL:
            term_mono = time.monotonic()
            victim.send(signal.SIGTERM)
            time.sleep(TERM_TO_KILL_SECONDS)
        fault = Fault(len(self.faults) + 1, victim.pid, mode, 0.0, 0.0, term_mono)
        # ``popen.poll()`` has not reaped it yet, so the pid cannot have been reused: even if
        # it exited on its own meanwhile, this signals our own zombie, not a stranger.
        fault.mono, fault.wall = time.monotonic(), time.time()
        victim.send(signal.SIGKILL)
        fault.rc = victim.wait_exit(timeout=10)
        self.faults.append(fault)
        with self.log.open("a") as f:
            f.write(json.dumps(asdict(fault)) + "\n")
        return fault

    def stop_all(self, timeout: float = 20.0) -> dict[int, int]:
        """SIGTERM every live worker; return their exit statuses by pid."""
        live = self.live()
        for proc in live:
            proc.send(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        return {p.pid: p.wait_exit(timeout=max(deadline - time.monotonic(), 1.0)) for p in live}


# -- the checker --------------------------------------------------------------------------------


@dataclass(slots=True)
class Execution:
    """One handler execution from the ledger: its ``start`` row and, if committed, its effect."""

    run_id: str
    job_id: str
    attempt: int
    pid: int
    mono_start: float
    wall_start: float
    mono_end: float | None = None  # set when the effect row was committed

    @property
    def effect(self) -> bool:
        return self.mono_end is not None

    def describe(self) -> str:
        end = (
            "no effect"
            if self.mono_end is None
            else f"effect at +{self.mono_end - self.mono_start:.3f}s"
        )
        return (
            f"run {self.run_id[:8]} attempt {self.attempt} pid {self.pid}"
            f" start mono {self.mono_start:.3f} (wall {self.wall_start:.3f}), {end}"
        )


@dataclass
class Report:
    enqueued: int
    executions: int = 0
    effects: int = 0
    lost: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    not_completed: dict[str, str] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    explained_duplicates: list[str] = field(default_factory=list)
    unexplained: list[str] = field(default_factory=list)  # re-executions no fault explains
    structural: list[str] = field(default_factory=list)
    re_executions: int = 0
    cut_short: int = 0  # executions with no effect, in a process that was then killed
    redelivery: list[float] = field(default_factory=list)  # kill -> next start of the job
    faults: list[Fault] = field(default_factory=list)

    def summary(self) -> str:
        kills = [f for f in self.faults if f.killed]
        shapes: dict[str, int] = defaultdict(int)
        for f in kills:
            shapes[f.mode] += 1
        redelivery = (
            f"median {statistics.median(self.redelivery):.2f}s max {max(self.redelivery):.2f}s"
            if self.redelivery
            else "n/a"
        )
        return (
            f"{self.enqueued} enqueued, {self.executions} executions, {self.effects} effects;"
            f" {len(kills)} kills ({dict(shapes)}) of {len(self.faults)} attempted;"
            f" {self.cut_short} executions cut short by a kill; {self.re_executions}"
            f" re-executions; {len(self.duplicates)} duplicates"
            f" ({len(self.explained_duplicates)} explained by a kill);"
            f" lost {len(self.lost)}, unexpected {len(self.unexpected)},"
            f" unexplained {len(self.unexplained)}, structural {len(self.structural)};"
            f" kill -> re-execution {redelivery}"
        )


def executions(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[Execution]]:
    """Ledger rows to executions, by job id, each job's in order of start."""
    runs: dict[str, Execution] = {}
    effects: dict[str, Mapping[str, Any]] = {}
    for row in rows:
        if row["kind"] == "start":
            runs[row["run_id"]] = Execution(
                row["run_id"],
                row["job_id"],
                row["attempt"],
                row["pid"],
                row["mono_start"],
                row["wall_start"],
            )
        else:
            effects[row["run_id"]] = row
    for run_id, row in effects.items():
        # The effect row is written after the start row by the same execution, so an effect
        # without a start would be a ledger bug: make it visible as an execution anyway.
        run = runs.setdefault(
            run_id,
            Execution(
                run_id,
                row["job_id"],
                row["attempt"],
                row["pid"],
                row["mono_start"],
                row["wall_start"],
            ),
        )
        run.mono_end = row["mono_end"]
    by_job: dict[str, list[Execution]] = defaultdict(list)
    for run in runs.values():
        by_job[run.job_id].append(run)
    for runs_of_job in by_job.values():
        runs_of_job.sort(key=lambda r: r.mono_start)
    return dict(by_job)


def check(
    enqueued: Sequence[str],
    rows: Iterable[Mapping[str, Any]],
    jobs: Mapping[str, JobInfo],
    faults: Sequence[Fault],
    *,
    max_stalls: int,
) -> Report:
    """Judge one chaos run; see the module docstring. Every list in the report must be empty."""
    report = Report(enqueued=len(enqueued), faults=list(faults))
    by_job = executions(rows)
    killed_at = {f.pid: f.mono for f in faults if f.killed}
    report.executions = sum(len(runs) for runs in by_job.values())
    report.effects = sum(r.effect for runs in by_job.values() for r in runs)
    report.cut_short = sum(
        not r.effect and r.pid in killed_at for runs in by_job.values() for r in runs
    )

    with_effect = {job_id for job_id, runs in by_job.items() if any(r.effect for r in runs)}
    report.lost = sorted(set(enqueued) - with_effect)
    report.unexpected = sorted(set(by_job) - set(enqueued))

    for job_id in enqueued:
        info = jobs.get(job_id)
        if info is None:
            report.structural.append(f"{job_id}: no job row")
            continue
        if info.state.value != "completed":
            report.not_completed[job_id] = info.state.value
        if not 1 <= info.attempt <= info.max_attempts:
            report.structural.append(f"{job_id}: attempt {info.attempt} of {info.max_attempts}")
        elif info.attempt != 1:
            report.structural.append(
                f"{job_id}: attempt {info.attempt}, but no handler ever failed: a kill was"
                " charged as an attempt"
            )
        if info.stalls > max_stalls:
            report.structural.append(f"{job_id}: {info.stalls} stalls > max_stalls {max_stalls}")
        runs = by_job.get(job_id, [])
        n_effects = sum(r.effect for r in runs)
        if n_effects > 1:
            report.duplicates[job_id] = n_effects
        if len(runs) - 1 > info.stalls:
            report.structural.append(
                f"{job_id}: {len(runs)} executions but only {info.stalls} rescues"
            )
        report.re_executions += max(len(runs) - 1, 0)
        problems = _explain(job_id, runs, info, killed_at, report.redelivery)
        if problems:
            listing = "\n      ".join(r.describe() for r in runs)
            report.unexplained.append(
                f"{job_id} (stalls {info.stalls}, result {info.result!r}): "
                + "; ".join(problems)
                + f"\n      {listing}"
            )
        elif n_effects > 1:
            report.explained_duplicates.append(job_id)
    return report


def _explain(
    job_id: str,
    runs: Sequence[Execution],
    info: JobInfo,
    killed_at: Mapping[int, float],
    redelivery: list[float],
) -> list[str]:
    """Why the executions of one completed job are not what a kill-only history allows."""
    if info.state.value != "completed" or not runs:
        return []  # reported as not completed / lost
    final = [i for i, r in enumerate(runs) if r.run_id == info.result]
    if not final:
        return [f"the result {info.result!r} names no execution in the ledger"]
    (last,) = final
    problems = []
    if not runs[last].effect:
        problems.append("the completing execution has no committed effect")
    if last != len(runs) - 1:
        problems.append("an execution started after the one that completed the job")
    for earlier, later in itertools.pairwise(runs[: last + 1]):
        death = killed_at.get(earlier.pid)
        what = "its effect committed" if earlier.effect else "it was cut short"
        if death is None:
            problems.append(
                f"run {earlier.run_id[:8]} in pid {earlier.pid} was not completed ({what}) and"
                " that process was never killed"
            )
        elif later.mono_start <= death:
            problems.append(
                f"run {later.run_id[:8]} (pid {later.pid}) started {death - later.mono_start:.3f}s"
                f" before pid {earlier.pid}, which was still running run {earlier.run_id[:8]},"
                " was killed"
            )
        else:
            redelivery.append(later.mono_start - death)
    return problems


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=1, default=str))


def environment_seed(default: int) -> int:
    value = os.environ.get("CONVEYOR_CHAOS_SEED")
    return int(value) if value else default
