"""Real ``conveyor worker`` subprocesses on SQLite, real signals: nothing is lost or run twice.

The app under test is :mod:`tests.process.app`; its handlers record every execution in a side
ledger, so executions are counted independently of the queue's own state.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from functools import partial
from typing import Any

import pytest

from tests.process.app.jobs import Quick, Slow, Strict, quick, slow, strict
from tests.process.harness import APP, Harness, wait_for

# Real processes on a loaded 2-core machine: more room than the suite-wide 120 s.
pytestmark = [pytest.mark.process, pytest.mark.timeout(300)]


def _starts_if(h: Harness, job_id: str, count: int) -> list[dict[str, Any]] | None:
    starts = h.events(job_id, "start")
    return starts if len(starts) == count else None


def slow_payload(h: Harness, max_seconds: float = 30.0) -> Slow:
    return Slow(marker=str(h.marker), max_seconds=max_seconds)


# -- 1. SIGTERM / SIGINT: finish within the grace, else hand back without using an attempt ------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_mid_job_hands_the_job_back_and_another_worker_completes_it(
    harness: Harness, sig: signal.Signals
) -> None:
    h = harness
    a = h.start_worker("--shutdown-grace", "0.5")
    job = h.queue.enqueue(slow, slow_payload(h), job_id="slow-1")
    started = h.wait_started(job.id)
    assert started["pid"] == a.pid and started["attempt"] == 1
    assert h.job(job.id).state.value == "active"

    sent = time.monotonic()
    a.send(sig)
    assert a.wait_exit(timeout=15) == 0, a.log()
    assert time.monotonic() - sent < 10, "the grace is 0.5 s; the worker took far longer"

    info = h.job(job.id)
    assert info.state.value == "queued", info
    assert info.attempt == 0, "a handed-back job must get its attempt back"
    assert info.worker_id is None and info.error is None
    assert h.event_kinds(job.id) == ["start", "interrupted"]
    assert "handed back" in a.log()

    # A second worker, with the marker in place, finishes the very same job.
    h.marker.touch()
    b = h.start_worker("--burst")
    assert b.wait_exit(timeout=30) == 0, b.log()
    info = h.job(job.id)
    assert info.state.value == "completed", info
    assert info.attempt == 1
    assert info.result == "done"
    events = h.events(job.id)
    assert [e["event"] for e in events] == ["start", "interrupted", "start", "end"]
    assert [e["pid"] for e in events] == [a.pid, a.pid, b.pid, b.pid]
    assert h.counts() == {"completed": 1}


def test_sigterm_lets_a_job_finish_within_the_grace_and_stops_fetching(harness: Harness) -> None:
    h = harness
    w = h.start_worker("--shutdown-grace", "30")
    job = h.queue.enqueue(slow, slow_payload(h), job_id="slow-1")
    h.wait_started(job.id)

    w.send(signal.SIGTERM)
    w.wait_log("finishing running jobs, then exiting")
    # The worker no longer fetches: a job enqueued now stays queued.
    late = h.queue.enqueue(quick, Quick(n=7), job_id="late-1")
    assert w.alive(), "the job is still running, so the worker must still be waiting"
    h.marker.touch()  # the running job now finishes, well inside the 30 s grace
    assert w.wait_exit(timeout=20) == 0, w.log()

    info = h.job(job.id)
    assert info.state.value == "completed", info
    assert info.attempt == 1 and info.result == "done"
    assert h.event_kinds(job.id) == ["start", "end"], "finished once, never re-run"
    late_info = h.job(late.id)
    assert late_info.state.value == "queued" and late_info.attempt == 0
    assert h.events(late.id) == []


def test_sigterm_hands_back_the_jobs_leased_ahead_at_once_and_unspent(harness: Harness) -> None:
    h = harness
    w = h.start_worker("--concurrency", "1", "--prefetch", "2", "--shutdown-grace", "30")
    running = h.queue.enqueue(slow, slow_payload(h), job_id="slow-0")
    h.wait_started(running.id)
    ahead = [h.queue.enqueue(slow, slow_payload(h), job_id=f"slow-{n}") for n in (1, 2)]
    wait_for(
        lambda: all(h.job(j.id).state.value == "active" for j in ahead),
        timeout=20,
        what="the two jobs leased ahead of the busy slot",
    )
    assert h.events("slow-1") == [] and h.events("slow-2") == []  # leased, not started

    w.send(signal.SIGTERM)
    w.wait_log("finishing running jobs, then exiting")
    # Handed back while the running job still runs: other workers need not wait for it.
    wait_for(
        lambda: all(h.job(j.id).state.value == "queued" for j in ahead),
        timeout=20,
        what="the jobs leased ahead handed back",
    )
    assert w.alive()
    h.marker.touch()
    assert w.wait_exit(timeout=20) == 0, w.log()

    assert h.job(running.id).state.value == "completed"
    for j in ahead:
        info = h.job(j.id)
        assert (info.state.value, info.attempt, info.worker_id) == ("queued", 0, None), info
        assert h.events(j.id) == []
    assert h.counts() == {"completed": 1, "queued": 2}


def test_second_sigterm_cuts_the_grace_to_zero(harness: Harness) -> None:
    h = harness
    w = h.start_worker("--shutdown-grace", "60")
    job = h.queue.enqueue(slow, slow_payload(h, max_seconds=60), job_id="slow-1")
    h.wait_started(job.id)

    w.send(signal.SIGTERM)
    # Wait until the first signal is handled, so the kernel cannot merge the two.
    w.wait_log("finishing running jobs, then exiting")
    assert w.alive()
    sent = time.monotonic()
    w.send(signal.SIGTERM)
    assert w.wait_exit(timeout=15) == 0, w.log()
    assert time.monotonic() - sent < 10, "the second signal must not wait out the 60 s grace"
    assert "handing back running jobs now" in w.log()

    info = h.job(job.id)
    assert info.state.value == "queued", info
    assert info.attempt == 0
    assert h.event_kinds(job.id) == ["start", "interrupted"]


# -- 2. SIGKILL: the lease expires and another worker rescues the job ---------------------------


def test_sigkill_mid_job_is_rescued_after_the_lease_and_completed_once(harness: Harness) -> None:
    h = harness
    a = h.start_worker()
    job = h.queue.enqueue(slow, slow_payload(h), job_id="slow-1")
    assert h.wait_started(job.id)["pid"] == a.pid
    b = h.start_worker()  # already running, idle: the only job is leased by A
    b.wait_log("worker started")
    assert h.job(job.id).state.value == "active"

    a.send(signal.SIGKILL)
    assert a.wait_exit(timeout=10) == -signal.SIGKILL
    h.marker.touch()  # from now on the handler finishes at once

    # The lease is 2 s; B's maintenance (every 0.2 s) rescues it, then B runs it.
    info = h.wait_state(job.id, "completed", timeout=30)
    assert info.result == "done"
    assert info.attempt == 1, "the stalled attempt is given back on rescue"
    assert info.stalls == 1
    events = h.events(job.id)
    assert [(e["event"], e["pid"]) for e in events] == [
        ("start", a.pid),
        ("start", b.pid),
        ("end", b.pid),
    ]
    assert "job rescued" in b.log()

    b.send(signal.SIGTERM)
    assert b.wait_exit(timeout=15) == 0, b.log()
    assert h.counts() == {"completed": 1}


def test_a_job_that_keeps_killing_its_worker_fails_after_max_stalls(harness: Harness) -> None:
    """Poison pill: with the app's ``max_stalls=2``, the third lost lease fails the job."""
    h = harness
    job = h.queue.enqueue(slow, slow_payload(h, max_seconds=60), job_id="pill")
    victims = []
    for round_ in range(1, 4):
        w = h.start_worker("--lease", "1")
        # Each new worker first rescues the previous victim's expired lease, then runs the job.
        starts = wait_for(
            partial(_starts_if, h, job.id, round_), timeout=30, what=f"start number {round_}"
        )
        assert starts[-1]["pid"] == w.pid
        w.send(signal.SIGKILL)
        assert w.wait_exit(timeout=10) == -signal.SIGKILL
        victims.append(w.pid)

    h.marker.touch()  # were it run again, it would now complete
    last = h.start_worker("--lease", "1")
    info = h.wait_state(job.id, "failed", timeout=30)
    assert info.stalls == 3
    assert info.error is not None and "max_stalls=2" in info.error
    starts = h.events(job.id, "start")
    assert [e["pid"] for e in starts] == victims, "the failed job must not run a fourth time"
    assert [e["attempt"] for e in starts] == [1, 1, 1], "a stall gives its attempt back"
    assert h.event_kinds(job.id) == ["start"] * 3
    assert "job failed after stalling" in last.log()
    last.send(signal.SIGTERM)
    assert last.wait_exit(timeout=15) == 0, last.log()


def test_lease_flag_shorter_than_the_configured_renewal_still_keeps_the_lease(
    harness: Harness,
) -> None:
    """``--lease 1`` on a Worker configured to renew every 10 s: renewal must follow the lease."""
    h = harness
    w = h.start_worker("--lease", "1", target=f"{APP}:slow_renewal")
    job = h.queue.enqueue(slow, slow_payload(h), job_id="slow-1")
    started = h.wait_started(job.id)
    # The subject is a span of time: the job outlives its 1 s lease three times over, and it
    # must stay leased by its one execution all along (a lapse is rescued within 0.2 s).
    deadline = started["at"] + 3.5
    while time.time() < deadline:
        assert h.event_kinds(job.id) == ["start"], w.log()
        assert h.job(job.id).stalls == 0, w.log()
        time.sleep(0.1)
    h.marker.touch()
    info = h.wait_state(job.id, "completed")
    assert info.stalls == 0 and info.attempt == 1
    assert h.event_kinds(job.id) == ["start", "end"]
    w.send(signal.SIGTERM)
    assert w.wait_exit(timeout=15) == 0, w.log()


# -- 3. Two workers on one file: each of 2,000 jobs runs exactly once ----------------------------


def test_two_burst_workers_run_each_of_2000_jobs_exactly_once(harness: Harness) -> None:
    h = harness
    total = 2000
    # A gate job keeps both burst workers alive (a running job means "not drained") until both
    # are up, so they compete for the 2,000 jobs from the first one on.
    gate = h.queue.enqueue(slow, slow_payload(h), job_id="gate")
    workers = [h.start_worker("--burst", "--concurrency", "10") for _ in range(2)]
    for w in workers:
        w.wait_log("worker started")
    h.wait_started(gate.id)

    ids: list[str] = []
    for start in range(0, total, 500):  # enqueued while both workers are fetching
        handles = h.queue.enqueue_many(
            [quick.request(Quick(n=i), job_id=f"q-{i}") for i in range(start, start + 500)]
        )
        ids.extend(handle.id for handle in handles)
    assert len(set(ids)) == total
    h.marker.touch()  # open the gate: once everything is done, both workers exit

    deadline = time.monotonic() + 120
    for w in workers:
        assert w.wait_exit(timeout=max(deadline - time.monotonic(), 1)) == 0, h.logs()

    assert h.counts() == {"completed": total + 1}, h.logs()
    completed = h.queue.call(h.queue.queue.list_jobs(state="completed", limit=total + 10))
    completed = [j for j in completed if j.id != gate.id]
    assert {j.id for j in completed} == set(ids)
    assert all(j.attempt == 1 and j.stalls == 0 for j in completed)
    assert sorted(j.result for j in completed) == list(range(total))

    starts = Counter(e["job_id"] for e in h.events(event="start"))
    ends = Counter(e["job_id"] for e in h.events(event="end"))
    assert set(starts) == {*ids, gate.id}
    doubles = {job_id: n for job_id, n in starts.items() if n != 1}
    assert not doubles, f"jobs executed more than once: {doubles}"
    assert ends == starts
    assert h.events(event="interrupted") == []

    by_pid = Counter(e["pid"] for e in h.events(event="end") if e["job_id"] != gate.id)
    assert set(by_pid) == {w.pid for w in workers}, f"both workers must share the work: {by_pid}"
    assert all(n > 0 for n in by_pid.values())


# -- 4. Missing handlers: ``conveyor check`` reports them, ``conveyor worker`` refuses ----------


def test_check_and_worker_refuse_a_definition_without_handler(harness: Harness) -> None:
    h = harness
    bad = h.run_cli("check", f"{APP}:incomplete")
    assert bad.returncode != 0
    assert "proc.orphan" in bad.stdout + bad.stderr
    assert "missing" in bad.stdout and "proc.quick" in bad.stdout

    good = h.run_cli("check", f"{APP}:worker")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "none missing" in good.stdout
    for name in ("proc.quick", "proc.slow", "proc.strict"):
        assert name in good.stdout

    job = h.queue.enqueue(quick, Quick(n=1), job_id="q-1")
    refused = h.start_worker(target=f"{APP}:incomplete")
    rc = refused.wait_exit(timeout=30)
    assert rc != 0
    assert "proc.orphan" in refused.log()
    assert h.job(job.id).state.value == "queued", "a refused worker must not take any job"
    assert h.events() == []


# -- 5. Bad input end to end: fails that job only, the worker keeps going -----------------------


def test_invalid_payload_fails_permanently_an_unknown_name_waits_and_the_worker_goes_on(
    harness: Harness,
) -> None:
    h = harness
    w = h.start_worker()
    invalid = h.queue.enqueue_by_name("proc.strict", {"count": "many"}, job_id="invalid-1")
    unknown = h.queue.enqueue_by_name("proc.renamed", {"n": 1}, job_id="unknown-1")

    info = h.wait_state(invalid.id, "failed")
    assert info.attempt == 1, "a payload that does not validate is not retried"
    assert info.error is not None and info.error.startswith("PayloadValidationError")
    assert "proc.strict" in info.error
    assert "count" in info.error and "label" in info.error

    assert w.alive(), w.log()

    good = h.queue.enqueue(strict, Strict(count=3, label="ok"), job_id="good-1")
    info = h.wait_state(good.id, "completed")
    assert info.result == "ok:3"
    assert h.event_kinds(good.id) == ["start", "end"]
    # The same model through the untyped door works too: validation, not the door, decides.
    untyped = h.queue.enqueue_by_name("proc.strict", {"count": 4, "label": "raw"})
    assert h.wait_state(untyped.id, "completed").result == "raw:4"

    # A name no handler knows never costs an attempt: on a backend that filters by name it
    # waits for a worker that knows it; on one that cannot, it is handed back (see the
    # conformance suite for the hour after which it fails).
    info = h.wait_state(unknown.id, "queued", "scheduled")
    assert info.attempt == 0
    assert h.events(invalid.id) == [] and h.events(unknown.id) == [], "no handler may run"

    assert w.alive(), w.log()
    w.send(signal.SIGTERM)
    assert w.wait_exit(timeout=15) == 0, w.log()
    counts = h.counts()
    assert (counts["completed"], counts["failed"]) == (2, 1)
    wait_for(lambda: "job failed" in w.log(), timeout=1, what="the failure to be logged")
