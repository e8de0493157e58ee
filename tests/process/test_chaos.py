"""Chaos, CI size (reliability.md §4 (a)): kill -9 workers mid-job under load on SQLite.

Three real ``conveyor worker`` processes (concurrency 8, 2.5 s lease) run 1,500 jobs of mixed
durations while a supervisor SIGKILLs a random one every 0.5-1.5 s and starts a replacement,
eight times; two of the kills are SIGTERM followed by SIGKILL 0.2 s later, inside the grace
(the sidekiq#4715 shape). Then the workers drain the queue and stop on SIGTERM.

The checker (``tests.process.chaos``) then requires: no job lost (every job has a committed
effect in the side ledger), every job ``completed`` by an execution that committed its effect,
and every other execution of a job, duplicates included, explained by a kill of the process that
ran it, with the next execution starting only after that kill.

The seed is 4715 unless ``$CONVEYOR_CHAOS_SEED`` says otherwise; the evidence (ledger, queue
database, fault log, worker logs, report) stays in the test's ``tmp_path``.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import pytest

from conveyor import JobInfo, JobRequest, JobState
from tests.process import chaos
from tests.process.app import chaos_ledger
from tests.process.app.chaos_jobs import Burn, Nap, burn, nap
from tests.process.app.chaos_worker import LEASE_SECONDS, MAX_STALLS
from tests.process.harness import Harness, wait_for

# Real processes on a loaded 2-core machine: more room than the suite-wide 120 s.
pytestmark = [pytest.mark.process, pytest.mark.timeout(300)]

TARGET = "tests.process.app.chaos_worker:worker"
TOTAL = 1500
UP_FRONT = 300  # the rest is enqueued in equal batches, one shortly before each kill
WORKERS = 3
KILLS = 8
TERM_KILLS = {2, 5}  # which kills (0-based) are SIGTERM then SIGKILL
DRAIN_CAP = 60.0


def job_plan(rng: random.Random) -> list[JobRequest[Any, Any]]:
    """Most jobs nap 0-20 ms, some 50-300 ms, a few burn CPU 20-100 ms in a sync handler."""
    plan: list[JobRequest[Any, Any]] = []
    for i in range(TOTAL):
        job_id = f"c-{i:04d}"
        draw = rng.random()
        if draw < 0.80:
            plan.append(nap.request(Nap(ms=rng.randint(0, 20)), job_id=job_id))
        elif draw < 0.95:
            plan.append(nap.request(Nap(ms=rng.randint(50, 300)), job_id=job_id))
        else:
            plan.append(burn.request(Burn(ms=rng.randint(20, 100)), job_id=job_id))
    return plan


def test_kill_9_workers_under_load_loses_nothing_and_every_rerun_is_explained(
    harness: Harness,
) -> None:
    h = harness
    seed = chaos.environment_seed(4715)
    rng = random.Random(seed)
    ledger_path = h.root / "chaos-ledger.db"
    chaos_ledger.create(str(ledger_path))
    h.env[chaos_ledger.ENV] = str(ledger_path)
    plan = job_plan(rng)
    ids = [f"c-{i:04d}" for i in range(TOTAL)]
    assert [r.job_id for r in plan] == ids
    sup = chaos.Supervisor(
        h,
        ["--concurrency", "8", "--lease", str(LEASE_SECONDS)],
        target=TARGET,
        log=h.root / "faults.jsonl",
    )
    began = time.monotonic()

    for _ in range(WORKERS):
        sup.start()
    for proc in sup.pool:
        proc.wait_log("worker started", timeout=30)
    h.queue.enqueue_many(plan[:UP_FRONT])
    wait_for(lambda: chaos_ledger.read(str(ledger_path)), timeout=30, what="a first execution")

    # -- the chaos: kill one worker at a time, start a replacement, keep enqueueing ------------
    # A batch of 150 takes the three workers about 0.4 s: killing 0.05-0.3 s after it is
    # enqueued lands while every worker is busy with up to 8 jobs.
    batch = (TOTAL - UP_FRONT) // KILLS
    for n in range(KILLS):
        interval, lag = rng.uniform(0.5, 1.5), rng.uniform(0.05, 0.3)
        time.sleep(interval - lag)
        first = UP_FRONT + n * batch
        last = TOTAL if n == KILLS - 1 else first + batch
        h.queue.enqueue_many(plan[first:last])
        time.sleep(lag)
        fault = sup.kill_one(rng, chaos.TERM_KILL if n in TERM_KILLS else chaos.KILL)
        print(
            f"fault {fault.n}: {fault.mode} pid {fault.pid} at wall {fault.wall:.3f} rc {fault.rc}"
        )
        sup.start()
    chaos_done = time.monotonic()

    # -- drain, then a clean stop --------------------------------------------------------------
    def drained() -> bool:
        return h.counts() == {"completed": TOTAL}

    stuck = None
    try:
        wait_for(drained, timeout=DRAIN_CAP, what="every job to complete", every=0.2)
    except AssertionError as exc:
        stuck = f"{exc}: counts {h.counts()}"  # still run the checker, for the evidence
    drained_at = time.monotonic()
    statuses = {} if stuck else sup.stop_all()

    # -- the checker ---------------------------------------------------------------------------
    rows = chaos_ledger.read(str(ledger_path))
    infos = h.queue.list_jobs(limit=TOTAL + 10)
    jobs = {info.id: info for info in infos}
    report = chaos.check(ids, rows, jobs, sup.faults, max_stalls=MAX_STALLS)
    summary = (
        f"seed {seed}: {report.summary()}; chaos {chaos_done - began:.1f}s,"
        f" drain {drained_at - chaos_done:.1f}s; evidence in {h.root}"
    )
    chaos.write_json(h.root / "report.json", {"summary": summary, **asdict(report)})
    print(summary)

    if stuck:
        unfinished = {j: (jobs[j].state.value, jobs[j].stalls) for j in report.not_completed}
        raise AssertionError(f"{stuck}; unfinished (state, stalls) {unfinished}; {summary}")
    assert all(rc == 0 for rc in statuses.values()), f"exit statuses {statuses}:\n{h.logs()}"
    assert not report.lost, f"lost jobs (no committed effect) {report.lost[:20]}; {summary}"
    assert not report.unexpected, f"executions of unknown jobs {report.unexpected[:20]}; {summary}"
    assert not report.not_completed, f"not completed {report.not_completed}; {summary}"
    assert not report.unexplained, (
        f"{len(report.unexplained)} job(s) ran again with no kill to explain it"
        f" (duplicates {report.duplicates}):\n  "
        + "\n  ".join(report.unexplained[:20])
        + f"\n{summary}"
    )
    assert not report.structural, f"structural: {report.structural[:20]}; {summary}"
    assert h.counts() == {"completed": TOTAL}, summary
    assert len(infos) == TOTAL, summary
    assert h.store_problems() == [], summary

    # The chaos was real: every SIGKILL killed its worker, and kills cut executions short. (A
    # worker with no job left to finish may exit 0 in the 0.2 s between SIGTERM and SIGKILL.)
    rcs = [(f.mode, f.rc) for f in sup.faults]
    assert all(rc == -9 or (mode == chaos.TERM_KILL and rc == 0) for mode, rc in rcs), rcs
    assert report.cut_short > 0, f"no kill landed mid-job; {summary}"
    assert set(report.explained_duplicates) == set(report.duplicates), summary


# -- the checker itself, on made-up histories (no processes) -------------------------------------


def _info(job_id: str, result: str, *, stalls: int = 0, state: str = "completed") -> JobInfo:
    now = datetime.now(UTC)
    return JobInfo(
        id=job_id,
        name="chaos.nap",
        queue="default",
        state=JobState(state),
        priority=0,
        attempt=1,
        max_attempts=3,
        run_at=now,
        enqueued_at=now,
        started_at=now,
        finished_at=now,
        worker_id=None,
        stalls=stalls,
        error=None,
        payload_json=b"{}",
        result_json=json.dumps(result).encode(),
        seq=1,
    )


def _rows(run_id: str, pid: int, start: float, end: float | None) -> list[dict[str, Any]]:
    base = {"run_id": run_id, "job_id": "j", "attempt": 1, "pid": pid}
    rows = [{**base, "kind": "start", "mono_start": start, "wall_start": start}]
    if end is not None:
        rows.append({**base, "kind": "effect", "mono_start": start, "wall_start": start,
                     "mono_end": end, "wall_end": end})  # fmt: skip
    return rows


def _kill(pid: int, at: float, rc: int = -9) -> chaos.Fault:
    return chaos.Fault(1, pid, chaos.KILL, at, at, rc=rc)


@pytest.mark.parametrize(
    ("history", "faults", "stalls", "verdict"),
    [
        # Effect committed in pid 1, which was killed before its completion was written: the
        # re-run in pid 2 after the kill is an explained duplicate.
        ([("a", 1, 10.0, 10.1), ("b", 2, 12.0, 12.1)], [_kill(1, 10.5)], 1, "explained"),
        # Cut short by the kill: a re-execution, not a duplicate.
        ([("a", 1, 10.0, None), ("b", 2, 12.0, 12.1)], [_kill(1, 10.5)], 1, "clean"),
        # Pid 1 was never killed: a live worker's execution was run again.
        ([("a", 1, 10.0, 10.1), ("b", 2, 12.0, 12.1)], [], 1, "unexplained"),
        # Pid 1 was killed, but the re-run started while it was still alive.
        ([("a", 1, 10.0, 10.1), ("b", 2, 10.2, 10.3)], [_kill(1, 10.5)], 1, "unexplained"),
        # Pid 1 got SIGTERM and exited by itself (rc 0): no kill explains its re-run.
        ([("a", 1, 10.0, 10.1), ("b", 2, 12.0, 12.1)], [_kill(1, 10.5, rc=0)], 1, "unexplained"),
        # The completing execution is not the last one: the job ran after it completed.
        ([("b", 2, 12.0, 12.1), ("c", 3, 13.0, 13.1)], [_kill(3, 13.5)], 1, "unexplained"),
        # Two executions but no rescue recorded.
        ([("a", 1, 10.0, None), ("b", 2, 12.0, 12.1)], [_kill(1, 10.5)], 0, "structural"),
    ],
)
def test_checker_explains_reruns_only_by_kills(
    history: list[tuple[str, int, float, float | None]],
    faults: list[chaos.Fault],
    stalls: int,
    verdict: str,
) -> None:
    rows = [row for run_id, pid, start, end in history for row in _rows(run_id, pid, start, end)]
    report = chaos.check(["j"], rows, {"j": _info("j", "b", stalls=stalls)}, faults, max_stalls=3)
    assert not report.lost and not report.unexpected and not report.not_completed
    assert bool(report.unexplained) == (verdict == "unexplained"), report.unexplained
    assert bool(report.structural) == (verdict == "structural"), report.structural
    assert (report.explained_duplicates == ["j"]) == (verdict == "explained"), report


def test_checker_reports_lost_unexpected_and_unfinished_jobs() -> None:
    rows = _rows("b", 2, 12.0, None) + [
        {**row, "job_id": "x"} for row in _rows("x1", 2, 12.0, 12.1)
    ]
    jobs = {"j": _info("j", "b", state="active"), "k": _info("k", "zz")}
    report = chaos.check(["j", "k"], rows, jobs, [], max_stalls=3)
    assert report.lost == ["j", "k"]
    assert report.unexpected == ["x"]
    assert report.not_completed == {"j": "active"}
    assert report.unexplained == [], "a job with no execution is lost, not also unexplained"
