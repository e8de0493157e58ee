"""The dedup values users build (validated when made, frozen) and the rules every backend
applies (conveyor.drivers.common.dedup_decision), as a table."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from conveyor import Debounce, InvalidArgument, Throttle, UntilFinished, UntilStarted
from conveyor._dedup import dedup_of, default_key
from conveyor.drivers.common import DedupHolder, dedup_decision
from conveyor.drivers.records import Dedup, DedupMode, InsertStatus, JobState, NewJob

NOW = 1_700_000_000.0
INSERTED, DUPLICATE, REPLACED = InsertStatus.INSERTED, InsertStatus.DUPLICATE, InsertStatus.REPLACED


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Throttle(0), "Throttle ttl must be > 0"),
        (lambda: Throttle(timedelta(seconds=-1)), "Throttle ttl"),
        (lambda: Throttle(float("nan")), "Throttle ttl"),
        (lambda: Throttle("60"), "Throttle ttl must be a number"),
        (lambda: Debounce(0), "Debounce delay must be > 0"),
        (lambda: Debounce(float("inf")), "Debounce delay"),
        (lambda: UntilStarted(key=""), "UntilStarted: key must be text of 1 to 1000"),
        (lambda: UntilFinished(key="a\nb"), "UntilFinished: key must hold no control"),
        (lambda: Throttle(5, key="k" * 1001), "Throttle: key must be text"),
        (lambda: Debounce(5, key=7), "Debounce: key must be text"),
    ],
)
def test_a_bad_value_is_refused_when_made(make: object, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        make()  # type: ignore[operator]


def test_values_are_frozen_and_compare_by_value() -> None:
    assert Throttle(60, key="k") == Throttle(60, key="k")
    with pytest.raises(dataclasses.FrozenInstanceError):
        Throttle(60).ttl = 5  # type: ignore[misc]


def test_the_default_key_is_the_name_and_a_digest_of_the_canonical_payload() -> None:
    key = default_key("search.reindex", b'{"b": 1, "a": [1, 2]}')
    assert key == default_key("search.reindex", b'{"a":[1,2],"b":1}')
    assert key.startswith("search.reindex:") and len(key) == len("search.reindex:") + 32
    assert key != default_key("search.other", b'{"a":[1,2],"b":1}')
    assert key != default_key("search.reindex", b'{"a":[1,2],"b":2}')


def test_what_the_driver_gets_for_each_value() -> None:
    payload = b'{"n":1}'
    assert dedup_of(None, "j", payload, 5, None) == (None, 5)
    assert dedup_of(UntilStarted(key="k"), "j", payload, None, None) == (
        Dedup(DedupMode.UNTIL_STARTED, "k"),
        None,
    )
    assert dedup_of(Throttle(timedelta(minutes=1), key="k"), "j", payload, 3, None) == (
        Dedup(DedupMode.THROTTLE, "k", 60.0),
        3,
    )
    # A debounce's delay is the job's.
    assert dedup_of(Debounce(10, key="k"), "j", payload, None, None) == (
        Dedup(DedupMode.DEBOUNCE, "k"),
        10,
    )
    with pytest.raises(InvalidArgument, match="pass no delay or run_at"):
        dedup_of(Debounce(10), "j", payload, 1, None)
    with pytest.raises(InvalidArgument, match="dedup must be"):
        dedup_of(DedupMode.THROTTLE, "j", payload, None, None)


def holder(
    mode: DedupMode,
    state: JobState,
    *,
    started: bool = False,
    run_at: float = NOW,
    expires_at: float | None = None,
    name: str = "j",
) -> DedupHolder:
    return DedupHolder("h", name, mode, expires_at, state, started, run_at)


def new(mode: DedupMode, name: str = "j") -> NewJob:
    return NewJob("n", "q", name, b"{}", delay=5, dedup=Dedup(mode, "k"))


S, F = DedupMode.UNTIL_STARTED, DedupMode.UNTIL_FINISHED
T, D = DedupMode.THROTTLE, DedupMode.DEBOUNCE


@pytest.mark.parametrize(
    ("held_by", "arriving", "expected"),
    [
        (None, new(S), INSERTED),
        (holder(S, JobState.QUEUED), new(S), DUPLICATE),
        (holder(S, JobState.SCHEDULED), new(S), DUPLICATE),
        (holder(S, JobState.ACTIVE, started=True), new(S), INSERTED),
        (holder(S, JobState.RETRYING, started=True), new(S), INSERTED),
        (holder(S, JobState.QUEUED, started=True), new(S), INSERTED),  # rescued: it started
        (holder(F, JobState.ACTIVE, started=True), new(F), DUPLICATE),
        (holder(F, JobState.RETRYING, started=True), new(F), DUPLICATE),
        (holder(F, JobState.COMPLETED, started=True), new(F), INSERTED),
        (holder(F, JobState.FAILED, started=True), new(F), INSERTED),
        (holder(F, JobState.CANCELLED), new(F), INSERTED),
        (holder(T, JobState.COMPLETED, expires_at=NOW + 1), new(T), DUPLICATE),
        (holder(T, JobState.QUEUED, expires_at=NOW), new(T), INSERTED),
        (holder(D, JobState.SCHEDULED, run_at=NOW + 1), new(D), REPLACED),
        (holder(D, JobState.SCHEDULED, run_at=NOW + 1), new(D, name="other"), DUPLICATE),
        (holder(D, JobState.SCHEDULED, run_at=NOW + 1), new(S), DUPLICATE),
        (holder(D, JobState.SCHEDULED, run_at=NOW), new(D), INSERTED),  # due: it runs
        (holder(D, JobState.QUEUED, run_at=NOW - 1), new(D), INSERTED),
        (holder(S, JobState.QUEUED), new(D), DUPLICATE),  # only a debounced holder is replaced
    ],
)
def test_the_rules(held_by: DedupHolder | None, arriving: NewJob, expected: InsertStatus) -> None:
    assert dedup_decision(held_by, arriving, NOW) is expected
