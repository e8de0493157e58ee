"""Groups without I/O: the key a definition computes, what the core decides when a grouped job
meets an upstream limit, how a fetch's limit is shared, and the checks every backend applies."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from conveyor import InvalidArgument, Rate, job
from conveyor.core.backoff import Fixed
from conveyor.core.outcome import PauseGroup, PauseQueue, Throttled, decide
from conveyor.drivers.common import check_new_jobs
from conveyor.drivers.groups import GROUP_KEY_CHARS, group_turn, split_limit
from conveyor.drivers.records import JobGroup, JobRecord, NewJob
from tests.unit.records import active_record

NOW = 1_700_000_000.0


class Order(BaseModel):
    customer: str
    total: int


def test_a_definition_builds_its_jobs_group_from_the_payload() -> None:
    defn = job(
        "shop.order",
        Order,
        group_key=lambda p: p.customer,
        group_concurrency=2,
        group_rate=Rate(5, per=60),
    )
    assert defn.group_of(Order(customer="c-1", total=3)) == JobGroup(
        "shop.order:c-1", concurrency=2, rate_count=5, rate_per=60.0
    )
    assert job("shop.plain", Order).group_of(Order(customer="c", total=1)) is None
    fair_only = job("shop.fair", Order, group_key=lambda p: p.customer)
    assert fair_only.group_of(Order(customer="c", total=1)) == JobGroup("shop.fair:c")


@pytest.mark.parametrize("bad", ["", "x" * 257, "a\x00b", 7, None])
def test_a_key_that_is_not_short_text_fails_that_enqueue_naming_the_job(bad: object) -> None:
    defn = job("shop.bad", Order, group_key=lambda p: bad)  # type: ignore[arg-type,return-value]
    with pytest.raises(InvalidArgument, match=r"job 'shop\.bad': group_key must return text"):
        defn.group_of(Order(customer="c", total=1))


def _record(group: str | None) -> JobRecord:
    return active_record(id="j", queue="q", max_attempts=1, lease_token="t", group=group)


def test_an_upstream_limit_of_a_grouped_job_pauses_its_group_not_the_queue() -> None:
    rng = random.Random()
    grouped = decide(Throttled(30.0, "429"), _record("n:a"), backoff=Fixed(1), rng=rng)
    assert grouped == PauseGroup(30.0, "429")
    # Even on a rate-limited definition: the key that met the limit waits, the others go on.
    limited = decide(Throttled(5.0), _record("n:a"), backoff=Fixed(1), rng=rng, rate_limited=True)
    assert limited == PauseGroup(5.0, "rate limited")
    plain = decide(Throttled(5.0), _record(None), backoff=Fixed(1), rng=rng, rate_limited=True)
    assert plain == PauseQueue(5.0, "rate limited")


def test_the_limit_is_shared_between_grouped_and_plain_jobs() -> None:
    assert split_limit(10, True, False, False) == 10
    assert split_limit(10, False, True, True) == 0
    assert split_limit(10, True, True, False) == 5
    assert split_limit(7, True, True, False) == 4
    assert split_limit(1, True, True, True) == 1
    assert split_limit(1, True, True, False) == 0


@given(st.floats(0, 1e9), st.none() | st.floats(0, 1e9), st.none() | st.floats(0, 1e9))
def test_a_groups_turn_is_never_before_any_of_what_holds_it(
    served: float, free_at: float | None, blocked: float | None
) -> None:
    turn = group_turn(served, free_at, blocked)
    assert turn >= served
    assert free_at is None or turn >= free_at
    assert blocked is None or turn >= blocked
    assert turn in (served, free_at, blocked)


@pytest.mark.parametrize(
    ("group", "message"),
    [
        (JobGroup(""), "group key must be text"),
        (JobGroup("k" * (GROUP_KEY_CHARS + 1)), "group key must be text"),
        (JobGroup("k\x00"), "NUL"),
        (JobGroup("k", concurrency=-1), "group concurrency"),
        (JobGroup("k", concurrency=True), "group concurrency"),
        (JobGroup("k", rate_count=1_001, rate_per=1.0), "group rate count"),
        (JobGroup("k", rate_count=1, rate_per=float("inf")), "group rate per"),
        (JobGroup("k", rate_count=3), "both a count and a window"),
        (JobGroup("k", rate_per=1.0), "both a count and a window"),
    ],
)
def test_every_backend_refuses_a_group_it_could_not_keep(group: JobGroup, message: str) -> None:
    job_ = dataclasses.replace(NewJob("j1", "q", "n", b"{}"), group=group)
    with pytest.raises(InvalidArgument, match=message) as caught:
        check_new_jobs([job_])
    assert "job 'j1'" in str(caught.value)
