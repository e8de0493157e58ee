"""``conveyor worker --processes N``: a real supervisor with real worker children, real signals.

The supervisor is the process the harness starts; the children are its worker processes,
found by pid in its JSON log (``process_started`` events) and in the ledger of executions.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.process.app.jobs import Quick, Slow, quick, slow
from tests.process.harness import APP, Harness, WorkerProcess, wait_for

# Real processes on a loaded 2-core machine: more room than the suite-wide 120 s.
pytestmark = [pytest.mark.process, pytest.mark.timeout(300)]


def log_events(proc: WorkerProcess, event: str) -> list[dict[str, Any]]:
    """The JSON log lines of ``event`` written by the supervisor or its children."""
    found = []
    for line in proc.log().splitlines():
        try:
            body = json.loads(line)
        except ValueError:  # a traceback's lines, e.g. of a child that crashed
            continue
        if body.get("event") == event:
            found.append(body)
    return found


def children_started(proc: WorkerProcess, count: int) -> list[dict[str, Any]] | None:
    started = log_events(proc, "process_started")
    return started if len(started) >= count else None


def gone(pid: int) -> bool:
    """True once ``pid`` has exited and been reaped (no /proc entry left)."""
    return not Path(f"/proc/{pid}").exists()


def start_supervisor(h: Harness, *args: str, target: str | None = None) -> WorkerProcess:
    extra = {} if target is None else {"target": target}
    return h.start_worker("--processes", "2", "--log-format", "json", *args, **extra)


@pytest.mark.parametrize(
    ("signals", "grace"),
    [([signal.SIGTERM], "0.5"), ([signal.SIGINT, signal.SIGINT], "60")],
    ids=["SIGTERM-grace-runs-out", "second-SIGINT-hands-back"],
)
def test_two_processes_share_the_work_and_stop_on_signals_losing_nothing(
    harness: Harness, signals: list[signal.Signals], grace: str
) -> None:
    h = harness
    sup = start_supervisor(h, "--concurrency", "1", "--shutdown-grace", grace)
    children = wait_for(lambda: children_started(sup, 2), timeout=20, what="two worker processes")
    child_pids = {c["pid"] for c in children}
    assert len(child_pids) == 2 and sup.pid not in child_pids
    assert {c["child"] for c in children} == {0, 1}

    # With one job at a time each, the two slow jobs must run in the two children at once.
    slow_ids = [
        h.queue.enqueue(slow, Slow(marker=str(h.marker), max_seconds=120), job_id=f"slow-{i}").id
        for i in (1, 2)
    ]
    running = {h.wait_started(job_id)["pid"] for job_id in slow_ids}
    assert running == child_pids, "each worker process runs one of the two slow jobs"
    queued = [h.queue.enqueue(quick, Quick(n=i), job_id=f"q-{i}").id for i in range(20)]

    sup.send(signals[0])
    wait_for(
        lambda: (
            len({e["worker_id"] for e in log_events(sup, "shutdown") if e.get("worker_id")}) >= 2
        ),
        timeout=15,
        what="both worker processes to get the forwarded signal",
    )
    for sig in signals[1:]:
        assert sup.alive(), "the 60 s grace keeps the children, so the supervisor, waiting"
        sup.send(sig)
    assert sup.wait_exit(timeout=30) == 0, sup.log()
    exits = log_events(sup, "process_exited")
    assert sorted((e["pid"], e["exit_status"]) for e in exits) == sorted(
        (pid, 0) for pid in child_pids
    ), sup.log()
    assert all(gone(pid) for pid in child_pids)
    if len(signals) == 2:
        assert "hand back running jobs now" in sup.log()

    # Handed back with their attempt returned; nothing else was started meanwhile.
    for job_id in slow_ids:
        info = h.job(job_id)
        assert info.state.value == "queued" and info.attempt == 0, info
        assert h.event_kinds(job_id) == ["start", "interrupted"]
    assert all(h.events(job_id) == [] for job_id in queued)

    # A new pair of burst workers completes everything, each job exactly once.
    h.marker.touch()
    again = start_supervisor(h, "--burst", "--concurrency", "4")
    assert again.wait_exit(timeout=60) == 0, again.log()
    all_ids = [*slow_ids, *queued]
    assert h.counts() == {"completed": len(all_ids)}, h.logs()
    ends = Counter(e["job_id"] for e in h.events(event="end"))
    assert ends == Counter(all_ids), "every job ran to its end exactly once"
    new_pids = {c["pid"] for c in log_events(again, "process_started")}
    assert {e["pid"] for e in h.events(event="end")} <= new_pids
    for job_id in slow_ids:
        assert h.job(job_id).attempt == 1


def test_a_child_killed_with_sigkill_is_restarted_and_work_goes_on(harness: Harness) -> None:
    h = harness
    sup = start_supervisor(h, "--concurrency", "1")
    wait_for(lambda: children_started(sup, 2), timeout=20, what="two worker processes")
    slow_ids = [
        h.queue.enqueue(slow, Slow(marker=str(h.marker), max_seconds=120), job_id=f"slow-{i}").id
        for i in (1, 2)
    ]
    starts = {job_id: h.wait_started(job_id)["pid"] for job_id in slow_ids}
    victim, survivor = starts["slow-1"], starts["slow-2"]
    assert victim != survivor

    os.kill(victim, signal.SIGKILL)
    started = wait_for(lambda: children_started(sup, 3), timeout=20, what="a restarted child")
    replacement = started[-1]["pid"]
    assert replacement not in (victim, survivor)
    killed = [e for e in log_events(sup, "process_exited") if e["pid"] == victim]
    assert [e["exit_status"] for e in killed] == [-signal.SIGKILL]
    assert "restarting in" in killed[0]["message"]

    # The survivor is busy with slow-2 (one job at a time), so once slow-1's 2 s lease expires
    # and it is rescued, only the replacement can run it.
    rerun = wait_for(
        lambda: h.events("slow-1", "start")[1:], timeout=30, what="slow-1 to run again"
    )
    assert rerun[0]["pid"] == replacement
    h.marker.touch()
    for job_id in slow_ids:
        h.wait_state(job_id, "completed", timeout=30)
    assert [e["pid"] for e in h.events("slow-1", "end")] == [replacement]
    assert [e["pid"] for e in h.events("slow-2", "end")] == [survivor]

    # Work keeps flowing through both processes.
    ids = [h.queue.enqueue(quick, Quick(n=i), job_id=f"q-{i}").id for i in range(30)]
    for job_id in ids:
        h.wait_state(job_id, "completed", timeout=30)
    assert sup.alive()
    sup.send(signal.SIGTERM)
    assert sup.wait_exit(timeout=30) == 0, sup.log()
    assert h.counts() == {"completed": 32}
    ends = Counter(e["job_id"] for e in h.events(event="end"))
    assert ends == Counter([*slow_ids, *ids])
    assert gone(replacement) and gone(survivor)


# -- what needs no particular backend: on SQLite only ------------------------------------------


@pytest.fixture
def sqlite_harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path, f"sqlite:///{tmp_path / 'queue.db'}")
    try:
        yield h
    finally:
        h.kill_all()
        h.queue.close()


@pytest.mark.parametrize(
    "target",
    ["tests.process.app.no_such_module:worker", "tests.process.app.broken_worker:worker"],
    ids=["import-error", "raises-at-import"],
)
def test_the_supervisor_gives_up_on_a_child_that_crashes_at_start_up(
    sqlite_harness: Harness, target: str
) -> None:
    h = sqlite_harness
    sup = start_supervisor(h, target=target)
    # Five quick exits with pauses of 0.5, 1, 2 and 4 s between them: well under 60 s.
    assert sup.wait_exit(timeout=60) == 1, sup.log()
    [gave_up] = log_events(sup, "supervisor_gave_up")
    assert "5 times in a row" in gave_up["message"] and "giving up" in gave_up["message"]
    started = log_events(sup, "process_started")
    assert len(started) <= 2 * 5, "bounded: no child is started again after giving up"
    assert all(gone(e["pid"]) for e in started)


def test_children_of_a_supervisor_killed_with_sigkill_stop_gracefully(
    sqlite_harness: Harness,
) -> None:
    h = sqlite_harness
    sup = start_supervisor(h, "--shutdown-grace", "0.5")
    children = wait_for(lambda: children_started(sup, 2), timeout=20, what="two children")
    job = h.queue.enqueue(slow, Slow(marker=str(h.marker), max_seconds=120), job_id="slow-1")
    h.wait_started(job.id)
    sup.send(signal.SIGKILL)
    assert sup.wait_exit(timeout=10) == -signal.SIGKILL
    # The kernel sends each child SIGTERM (PR_SET_PDEATHSIG): it hands its job back and exits.
    for child in children:
        wait_for(lambda pid=child["pid"]: gone(pid), timeout=20, what=f"child {child['pid']}")
    assert h.event_kinds(job.id) == ["start", "interrupted"]
    info = h.job(job.id)
    assert info.state.value == "queued" and info.attempt == 0, info


def test_process_count_and_reload_options_are_checked(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    both = h.run_cli("worker", "tests.process.app.worker:worker", "--reload", "--processes", "2")
    assert both.returncode == 2
    assert "--reload runs one worker process" in both.stderr
    assert "--processes 2" in both.stderr
    alone = h.run_cli("worker", "tests.process.app.worker:worker", "--reload-dir", ".")
    assert alone.returncode == 2 and "--reload-dir only applies with --reload" in alone.stderr
    zero = h.run_cli("worker", "tests.process.app.worker:worker", "--processes", "0")
    assert zero.returncode == 2 and "--processes" in zero.stderr


def test_a_child_stopped_by_a_signal_of_its_own_is_replaced(sqlite_harness: Harness) -> None:
    """Only the supervisor's stop ends the workers: a worker someone else stopped cleanly is
    started again (under --burst an exit 0 means drained, see the tests above)."""
    h = sqlite_harness
    sup = start_supervisor(h)
    children = wait_for(lambda: children_started(sup, 2), timeout=20, what="two children")
    first = children[0]["pid"]
    wait_for(lambda: len(log_events(sup, "started")) >= 2, timeout=20, what="both workers started")
    os.kill(first, signal.SIGTERM)
    started = wait_for(lambda: children_started(sup, 3), timeout=20, what="a replacement")
    assert started[-1]["child"] == children[0]["child"]
    [stopped] = [e for e in log_events(sup, "process_exited") if e["pid"] == first]
    assert stopped["exit_status"] == 0 and "restarting in" in stopped["message"]
    job = h.queue.enqueue(quick, Quick(n=1), job_id="after")
    assert h.wait_state(job.id, "completed").result == 1
    sup.send(signal.SIGTERM)
    assert sup.wait_exit(timeout=30) == 0, sup.log()


def test_ctrl_c_at_a_terminal_reaches_the_workers_once(sqlite_harness: Harness) -> None:
    """A terminal's Ctrl-C is a SIGINT to its whole foreground process group. The workers are
    outside it, so each gets the one signal the supervisor forwards (finish running jobs), not
    two (hand them back at once)."""
    h = sqlite_harness
    out, err = h.root / "group.out", h.root / "group.err"
    argv = h.cli_args("worker", f"{APP}:worker", "--processes", "2", "--log-format", "json")
    argv += ["--concurrency", "1", "--shutdown-grace", "60"]
    with out.open("wb") as fout, err.open("wb") as ferr:
        # A session of its own: its process group stands for the terminal's foreground group.
        popen = subprocess.Popen(
            argv, cwd=h.root, env=h.env, stdout=fout, stderr=ferr, start_new_session=True
        )
    sup = WorkerProcess(popen, out, err)
    h.processes.append(sup)
    wait_for(lambda: children_started(sup, 2), timeout=20, what="two worker processes")
    slow_ids = [
        h.queue.enqueue(slow, Slow(marker=str(h.marker), max_seconds=120), job_id=f"slow-{i}").id
        for i in (1, 2)
    ]
    for job_id in slow_ids:
        h.wait_started(job_id)

    os.killpg(sup.pid, signal.SIGINT)
    wait_for(
        lambda: (
            len({e["worker_id"] for e in log_events(sup, "shutdown") if e.get("worker_id")}) >= 2
        ),
        timeout=15,
        what="both worker processes to get the forwarded signal",
    )
    assert "hand back running jobs now" not in sup.log()
    assert "handing back running jobs now" not in sup.log()
    h.marker.touch()  # the running jobs finish within the grace, then the workers exit
    assert sup.wait_exit(timeout=30) == 0, sup.log()
    for job_id in slow_ids:
        assert h.event_kinds(job_id) == ["start", "end"]
        assert h.job(job_id).state.value == "completed"
