"""decide(): the one place that turns what happened into what happens next."""

from __future__ import annotations

import random

import pytest

from conveyor.core.backoff import Backoff, Exponential, Fixed
from conveyor.core.outcome import (
    Cancel,
    CancelRequested,
    Complete,
    Errored,
    Fail,
    Interrupted,
    Outcome,
    Requeue,
    RetryIn,
    Snoozed,
    SnoozeFor,
    Succeeded,
    TimedOut,
    Transition,
    decide,
)
from conveyor.drivers.records import JobRecord, JobState

NOW = 1_700_000_000.0


def record(attempt: int = 1, max_attempts: int = 3) -> JobRecord:
    return JobRecord(
        id="j1",
        queue="default",
        name="email.send",
        payload=b"{}",
        state=JobState.ACTIVE,
        priority=0,
        attempt=attempt,
        max_attempts=max_attempts,
        run_at=NOW,
        enqueued_at=NOW,
        seq=1,
        started_at=NOW,
        lease_token="t",
    )


def run(
    outcome: Outcome,
    *,
    attempt: int = 1,
    max_attempts: int = 3,
    backoff: Backoff | None = None,
) -> Transition:
    return decide(
        outcome,
        record(attempt, max_attempts),
        backoff=backoff or Fixed(5.0),
        rng=random.Random(0),
    )


def test_success_completes_with_the_result() -> None:
    assert run(Succeeded(b'"ok"')) == Complete(b'"ok"')


def test_success_on_the_last_attempt_still_completes() -> None:
    assert run(Succeeded(b"1"), attempt=3, max_attempts=3) == Complete(b"1")


@pytest.mark.parametrize("attempt", [1, 2])
def test_error_retries_while_attempts_remain(attempt: int) -> None:
    assert run(Errored("RuntimeError: boom"), attempt=attempt) == RetryIn(5.0, "RuntimeError: boom")


def test_error_on_the_last_attempt_fails_with_an_attempt_note() -> None:
    transition = run(Errored("RuntimeError: boom"), attempt=3, max_attempts=3)
    assert transition == Fail("RuntimeError: boom (attempt 3 of 3, no attempts left)")


def test_attempt_note_goes_on_the_first_line_and_keeps_the_traceback() -> None:
    error = "RuntimeError: boom\nTraceback (most recent call last):\n  ..."
    transition = run(Errored(error), attempt=1, max_attempts=1)
    assert isinstance(transition, Fail)
    head, _, rest = transition.error.partition("\n")
    assert head == "RuntimeError: boom (attempt 1 of 1, no attempts left)"
    assert rest == "Traceback (most recent call last):\n  ..."


def test_attempt_beyond_max_fails() -> None:
    # A job retried from the CLI can run with attempt > the original max; never retry past max.
    assert isinstance(run(Errored("x"), attempt=5, max_attempts=3), Fail)


def test_permanent_error_fails_at_once() -> None:
    assert run(Errored("Permanent: nope", permanent=True), attempt=1) == Fail("Permanent: nope")


def test_permanent_error_ignores_a_retry_delay() -> None:
    assert run(Errored("x", permanent=True, retry_delay=3.0)) == Fail("x")


def test_retry_delay_replaces_the_backoff() -> None:
    transition = run(Errored("Retry: later", retry_delay=42.0), backoff=Fixed(5.0))
    assert transition == RetryIn(42.0, "Retry: later")


def test_retry_delay_zero_means_now() -> None:
    assert run(Errored("Retry: now", retry_delay=0.0)) == RetryIn(0.0, "Retry: now")


def test_retry_with_delay_on_the_last_attempt_fails() -> None:
    transition = run(Errored("Retry: later", retry_delay=1.0), attempt=3, max_attempts=3)
    assert isinstance(transition, Fail)
    assert transition.error.startswith("Retry: later (attempt 3 of 3")


def test_backoff_receives_the_failed_attempt_number() -> None:
    backoff = Exponential(base=1.0, factor=2.0, cap=1000.0, jitter=False)
    assert run(Errored("e"), attempt=1, max_attempts=10, backoff=backoff) == RetryIn(1, "e")
    assert run(Errored("e"), attempt=4, max_attempts=10, backoff=backoff) == RetryIn(8, "e")


def test_snooze_reschedules_after_its_delay() -> None:
    assert run(Snoozed(30.0)) == SnoozeFor(30.0)


def test_snooze_on_the_last_attempt_does_not_fail() -> None:
    # Snoozing does not consume an attempt, so it never runs out of them.
    assert run(Snoozed(1.0), attempt=3, max_attempts=3) == SnoozeFor(1.0)


def test_timeout_retries_while_attempts_remain() -> None:
    transition = run(TimedOut(2.5), attempt=1)
    assert isinstance(transition, RetryIn)
    assert transition.delay == 5.0
    assert transition.error == "TimeoutError: job exceeded its timeout of 2.5s"


def test_timeout_on_the_last_attempt_fails() -> None:
    transition = run(TimedOut(2.0), attempt=2, max_attempts=2)
    assert transition == Fail(
        "TimeoutError: job exceeded its timeout of 2s (attempt 2 of 2, no attempts left)"
    )


def test_cancel_requested_cancels() -> None:
    transition = run(CancelRequested())
    assert isinstance(transition, Cancel)
    assert "cancel" in transition.error


def test_cancel_requested_on_the_last_attempt_still_cancels() -> None:
    assert isinstance(run(CancelRequested(), attempt=3, max_attempts=3), Cancel)


@pytest.mark.parametrize("attempt", [1, 3])
def test_interrupted_is_handed_back(attempt: int) -> None:
    assert run(Interrupted(), attempt=attempt, max_attempts=3) == Requeue()


def test_decide_is_deterministic_under_a_seeded_rng() -> None:
    backoff = Exponential(base=10.0, jitter=True)
    a = decide(Errored("e"), record(2, 5), backoff=backoff, rng=random.Random(7))
    b = decide(Errored("e"), record(2, 5), backoff=backoff, rng=random.Random(7))
    assert a == b
    assert isinstance(a, RetryIn)
    assert 0 <= a.delay <= 20.0


class Returns:
    def __init__(self, value: object) -> None:
        self.value = value

    def delay(self, attempt: int, rng: random.Random) -> float:
        return self.value  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"Returns({self.value!r})"


class Raises:
    def delay(self, attempt: int, rng: random.Random) -> float:
        raise ZeroDivisionError("a bug")


@pytest.mark.parametrize(
    ("backoff", "why"),
    [
        (Returns(float("nan")), "not a finite number of seconds >= 0 (nan)"),
        (Returns(float("inf")), "not a finite number of seconds >= 0 (inf)"),
        (Returns(-1.0), "not a finite number of seconds >= 0 (-1.0)"),
        (Returns(1e300), "over 100 years"),
        (Returns(10**400), "over 100 years (1000000000"),  # too large for a float, once
        (Returns(10**5000), "over 100 years (<int that cannot be shown"),  # and for repr
        (Returns(-(10**400)), "not a finite number of seconds >= 0"),
        (Returns("5"), "not a number of seconds ('5')"),
        (Raises(), "raised ZeroDivisionError: a bug"),
    ],
)
def test_a_bad_backoff_fails_the_job_naming_its_definition(backoff: Backoff, why: str) -> None:
    """Never an exception out of decide(): that would leave the job leased and unwritten."""
    transition = run(Errored("ValueError: flaky"), backoff=backoff)
    assert isinstance(transition, Fail)
    assert transition.error.startswith("InvalidBackoff: the backoff of job 'email.send'")
    assert why in transition.error
    assert transition.error.endswith("ValueError: flaky")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -3.0, 1e12, 10**400])
def test_a_bad_retry_or_snooze_delay_fails_the_job(bad: float) -> None:
    assert isinstance(run(Errored("Retry: x", retry_delay=bad)), Fail)
    assert isinstance(run(Snoozed(bad)), Fail)
