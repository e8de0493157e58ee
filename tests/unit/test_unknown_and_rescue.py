"""The core's decisions about a job no handler knows and about a job whose worker was lost."""

from __future__ import annotations

import dataclasses

import pytest

from conveyor.core.outcome import Fail, SnoozeFor
from conveyor.core.rescue import MAX_STALLS, decide_rescue
from conveyor.core.unknown import UNKNOWN_GRACE, decide_unknown, handback_delay
from conveyor.drivers.common import with_error
from conveyor.drivers.records import AttemptError, JobRecord, TransitionKind
from tests.unit.records import active_record

NOW = 1_700_000_000.0


def active(**fields: object) -> JobRecord:
    return active_record(**{"name": "report.build", "worker_id": "old-worker", **fields})


def test_an_unknown_job_is_handed_back_with_a_growing_delay() -> None:
    first = decide_unknown(active(), ("email.send",))
    assert isinstance(first, SnoozeFor) and first.delay == 10
    assert first.error is not None and first.error.startswith("UnknownJob: ")
    assert "'report.build'" in first.error and "email.send" in first.error
    history = (AttemptError(1, NOW, first.error),)
    second = decide_unknown(active(errors=history, started_at=NOW + 10), ("email.send",))
    assert isinstance(second, SnoozeFor) and second.delay == 20
    assert [handback_delay(n) for n in (1, 2, 3, 7, 8, 20)] == [10, 20, 40, 600, 600, 600]


def test_an_hour_of_hand_backs_fits_the_history_a_job_keeps() -> None:
    elapsed, handbacks = 0.0, 0
    while elapsed < UNKNOWN_GRACE:
        handbacks += 1
        elapsed += handback_delay(handbacks)
    assert handbacks < 20


def test_an_unknown_job_fails_once_no_worker_knew_it_for_an_hour() -> None:
    history = tuple(AttemptError(1, NOW + n, "UnknownJob: x") for n in range(3))
    still = decide_unknown(active(errors=history, started_at=NOW + UNKNOWN_GRACE - 1), ())
    assert isinstance(still, SnoozeFor)
    failed = decide_unknown(active(errors=history, started_at=NOW + UNKNOWN_GRACE), ())
    assert isinstance(failed, Fail) and failed.error.startswith("UnknownJob: ")


def test_only_the_latest_run_of_hand_backs_counts() -> None:
    """Hand-backs of an earlier attempt (before the job ran and failed once) do not count."""
    history = (
        AttemptError(1, NOW - 5000, "UnknownJob: x"),
        AttemptError(1, NOW - 4000, "ValueError: boom"),
    )
    decision = decide_unknown(active(attempt=2, errors=history), ())
    assert isinstance(decision, SnoozeFor) and decision.delay == 10


def test_the_first_loss_requeues_a_job_to_run_alone() -> None:
    decision = decide_rescue(active(), max_stalls=0)
    assert (decision.kind, decision.stalls, decision.token) == (TransitionKind.REQUEUE, 1, "tok")
    assert "run alone" in decision.error


def _lost(isolated: bool) -> AttemptError:
    """The history entry a rescue leaves (what ``decide_rescue`` wrote for that loss)."""
    return AttemptError(1, NOW, decide_rescue(active(isolated=isolated), 5).error)


@pytest.mark.parametrize(
    ("before", "max_stalls", "kind"),
    [
        ([False], 2, "requeue"),  # the first loss while alone, of two allowed
        ([False, True], 2, "fail"),  # the second
        ([False], 1, "fail"),
        ([False], 0, "fail"),
    ],
)
def test_a_loss_while_running_alone_is_evidence(
    before: list[bool], max_stalls: int, kind: str
) -> None:
    job = active(stalls=len(before), isolated=True, errors=tuple(_lost(i) for i in before))
    decision = decide_rescue(job, max_stalls)
    assert (decision.kind.value, decision.stalls) == (kind, len(before) + 1)


def test_only_losses_while_alone_are_counted_however_many_others_there_were() -> None:
    """Before: every loss counted, so a job lost twice beside a crasher (or while it waited
    for its turn to run alone) was failed by its first loss while alone."""
    job = active(stalls=4, isolated=True, errors=tuple(_lost(False) for _ in range(4)))
    decision = decide_rescue(job, max_stalls=2)
    assert decision.kind is TransitionKind.REQUEUE
    again = dataclasses.replace(job, stalls=5, errors=(*job.errors, _lost(True)))
    failed = decide_rescue(again, max_stalls=2)
    assert failed.kind is TransitionKind.FAIL
    assert (
        "lost 2 time(s) with the job running alone (6 losses in all, max_stalls=2)" in failed.error
    )


def test_losses_beside_other_jobs_never_fail_a_job() -> None:
    decision = decide_rescue(active(stalls=10), max_stalls=2)
    assert decision.kind is TransitionKind.REQUEUE


def test_a_pending_cancel_wins() -> None:
    decision = decide_rescue(active(stalls=5, isolated=True, cancel_requested=True), 0)
    assert decision.kind is TransitionKind.CANCEL
    assert decision.error.startswith("cancelled")


def test_a_job_a_filtering_backend_held_back_for_an_hour_fails_at_once() -> None:
    waited = active(run_at=NOW - UNKNOWN_GRACE, started_at=NOW)
    assert isinstance(decide_unknown(waited, (), filtered=True), Fail)
    assert isinstance(decide_unknown(waited, ()), SnoozeFor)  # a backlog is not a verdict


@pytest.mark.parametrize("filtered", [False, True])
def test_a_job_a_live_worker_knows_is_handed_back_however_long_it_waited(filtered: bool) -> None:
    history = tuple(
        AttemptError(0, NOW - UNKNOWN_GRACE * 2 + 60 * n, "UnknownJob: handed back")
        for n in range(3)
    )
    job = active(attempt=0, run_at=NOW - UNKNOWN_GRACE * 3, errors=history)
    assert isinstance(decide_unknown(job, (), filtered=filtered), Fail)
    decision = decide_unknown(job, (), filtered=filtered, known_elsewhere=True)
    assert isinstance(decision, SnoozeFor)
    assert "a live worker of queue 'default' has one" in decision.error


def _crash_loop(max_stalls: int, between: tuple[str, ...] = ()) -> int | None:
    """A job that kills every worker it runs alone in, with ``between`` other history entries
    of the same attempt between two losses (hand-backs): the loss that fails it, or None."""
    job = active(stalls=1, isolated=True)
    for n in range(1, 100):
        decision = decide_rescue(job, max_stalls)
        if decision.kind is TransitionKind.FAIL:
            return n
        errors = with_error(job.errors, job.attempt, NOW, decision.error)
        for text in between:
            errors = with_error(errors, job.attempt, NOW, text)
        job = dataclasses.replace(job, stalls=decision.stalls, errors=errors)
    return None


def test_the_count_of_losses_while_alone_survives_a_history_full_of_other_entries() -> None:
    """Before: the losses were counted entry by entry in a history of 20, so hand-backs between
    two losses (or a max_stalls above 20) kept a crasher requeued for ever."""
    assert _crash_loop(3) == 3
    # Up to 19 other entries between two losses: the latest loss still carries the count.
    assert _crash_loop(3, between=("UnknownJob: handed back for a live worker",) * 19) == 3
    assert _crash_loop(MAX_STALLS) == MAX_STALLS


def test_a_retried_job_starts_with_no_losses_counted() -> None:
    """An operator retries a job failed as a poison pill: the next attempt starts afresh."""
    failed = active(stalls=1, isolated=True)
    while (decision := decide_rescue(failed, 2)).kind is not TransitionKind.FAIL:
        errors = with_error(failed.errors, failed.attempt, NOW, decision.error)
        failed = dataclasses.replace(failed, stalls=decision.stalls, errors=errors)
    errors = with_error(failed.errors, failed.attempt, NOW, decision.error)
    retried = dataclasses.replace(failed, attempt=2, stalls=1, isolated=True, errors=errors)
    assert decide_rescue(retried, 2).kind is TransitionKind.REQUEUE


def test_max_stalls_is_bounded() -> None:
    from conveyor import WorkerConfig

    with pytest.raises(ValueError, match="max_stalls must be from 0 to 10"):
        WorkerConfig(max_stalls=MAX_STALLS + 1)
