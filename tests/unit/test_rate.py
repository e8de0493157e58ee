"""Rate limits without I/O: the ``Rate`` value, ``RateLimited``, what the core decides when a
handler meets an upstream limit, and the sliding log every backend keeps."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from conveyor import FakeClock, InvalidArgument, InvalidJobDefinition, Rate, RateLimited, job
from conveyor.core.backoff import Fixed
from conveyor.core.outcome import Fail, PauseQueue, SnoozeFor, Throttled, decide
from conveyor.drivers.common import check_rate_limits
from conveyor.drivers.rates import MAX_RATE_COUNT, allowance, allowed, logged, wait_seconds
from conveyor.drivers.records import JobRecord, RateLimit
from conveyor.runtime.rates import sleep_on
from tests.unit.records import active_record

NOW = 1_700_000_000.0


class Empty(BaseModel):
    pass


def test_rate_takes_seconds_or_a_timedelta() -> None:
    assert Rate(100, per=timedelta(seconds=1)) == Rate(100, per=1)
    assert Rate(5, per=timedelta(minutes=2)).per == 120.0
    assert Rate(MAX_RATE_COUNT, per=0.5).count == MAX_RATE_COUNT
    assert repr(Rate(3, per=10)) == "Rate(3, per=10s)"


def test_rate_is_frozen() -> None:
    rate = Rate(1, per=1)
    with pytest.raises(AttributeError):
        rate.count = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("count", "per", "message"),
    [
        (0, 1, "Rate count must be a whole number from 1 to 10_000, got 0"),
        (10_001, 1, "from 1 to 10_000, got 10001"),
        (True, 1, "got True"),
        (2.5, 1, "got 2.5"),
        ("5", 1, "got '5'"),
        (5, 0, "Rate per must be > 0"),
        (5, -1, "Rate per must be > 0"),
        (5, float("nan"), "Rate per must be > 0"),
        (5, timedelta(days=2), "Rate per must be at most a day"),
        (5, "1s", "Rate per must be a number of seconds or a timedelta"),
    ],
)
def test_a_bad_rate_is_refused_at_declaration(count: object, per: object, message: str) -> None:
    with pytest.raises(InvalidJobDefinition) as refused:
        Rate(count, per)  # type: ignore[arg-type]
    assert message in str(refused.value)


def test_job_keeps_its_rate_limit_and_refuses_anything_else() -> None:
    limited = job("t.limited", Empty, rate_limit=Rate(10, per=1))
    assert limited.rate_limit == Rate(10, per=1)
    assert job("t.free", Empty).rate_limit is None
    with pytest.raises(InvalidJobDefinition, match=r"rate_limit must be a conveyor\.Rate"):
        job("t.bad", Empty, rate_limit=(10, 1))  # type: ignore[arg-type]


def test_rate_limited_takes_seconds_or_a_timedelta_up_to_a_day() -> None:
    assert RateLimited(timedelta(seconds=30)).retry_after == 30.0
    assert RateLimited(0).retry_after == 0.0
    assert str(RateLimited(5, "HTTP 429")) == "HTTP 429"
    for bad in (-1, float("inf"), "soon", timedelta(days=2)):
        with pytest.raises(InvalidArgument, match="retry_after"):
            RateLimited(bad)  # type: ignore[arg-type]


def _record() -> JobRecord:
    return active_record(queue="api", name="api.call", max_attempts=1, lease_token="t")


def test_an_upstream_limit_pauses_a_rate_limited_queue() -> None:
    chosen = decide(
        Throttled(30.0, "429"), _record(), backoff=Fixed(1), rng=random.Random(), rate_limited=True
    )
    assert chosen == PauseQueue(30.0, "429")


def test_an_upstream_limit_snoozes_only_the_job_of_a_definition_without_a_limit() -> None:
    chosen = decide(Throttled(30.0), _record(), backoff=Fixed(1), rng=random.Random())
    assert chosen == SnoozeFor(30.0)


def test_an_unusable_retry_after_fails_the_job_naming_it() -> None:
    chosen = decide(Throttled(float("nan")), _record(), backoff=Fixed(1), rng=random.Random())
    assert isinstance(chosen, Fail) and "retry_after" in chosen.error


# -- the sliding log ---------------------------------------------------------------------------


def test_allowance_counts_free_places_and_starts_that_left_the_window() -> None:
    assert allowance([], 3, 1.0, NOW) == 3
    assert allowance([NOW - 0.5], 3, 1.0, NOW) == 2
    assert allowance([NOW - 2, NOW - 1, NOW - 0.5], 3, 1.0, NOW) == 2
    assert allowance([NOW - 0.9, NOW - 0.5, NOW], 3, 1.0, NOW) == 0
    # Only the last ``count`` entries count (a log written under a larger limit).
    assert allowance([NOW] * 5 + [NOW - 2] * 0, 3, 1.0, NOW + 1) == 3


def test_an_entry_out_of_order_only_ever_lowers_the_allowance() -> None:
    # The second entry is older than the first (a clock that stepped back): counting stops at
    # the first entry still in the window.
    assert allowance([NOW - 0.5, NOW - 5, NOW - 5], 3, 1.0, NOW) == 0


def test_logged_appends_stamps_in_order_and_keeps_the_last_count() -> None:
    assert logged([], 3, 2, NOW) == [NOW, NOW]
    assert logged([NOW - 3, NOW - 2, NOW - 1], 3, 2, NOW) == [NOW - 1, NOW, NOW]
    assert logged([NOW + 1], 3, 1, NOW) == [NOW + 1, NOW + 1]  # never before the newest


def test_wait_is_none_while_a_start_is_allowed_else_until_the_later_of_slide_and_block() -> None:
    assert wait_seconds([NOW - 0.5], 2, 1.0, None, NOW) is None
    assert wait_seconds([NOW - 0.75, NOW - 0.5], 2, 1.0, None, NOW) == pytest.approx(0.25)
    assert wait_seconds([], 2, 1.0, NOW + 10, NOW) == pytest.approx(10)
    assert wait_seconds([NOW - 0.75, NOW], 2, 1.0, NOW + 0.1, NOW) == pytest.approx(0.25)
    assert allowed([], 2, 1.0, NOW + 1, NOW) == 0
    assert allowed([], 2, 1.0, NOW, NOW) == 2  # a block ends at its instant


@given(
    count=st.integers(1, 8),
    per=st.sampled_from([0.5, 1.0, 3.0]),
    steps=st.lists(st.tuples(st.floats(0, 1.5), st.integers(0, 10)), max_size=40),
)
def test_following_the_log_never_lets_more_than_count_start_in_any_window(
    count: int, per: float, steps: list[tuple[float, int]]
) -> None:
    log: list[float] = []
    starts: list[float] = []
    now = NOW
    for gap, wanted in steps:
        now += gap
        k = min(wanted, allowance(log, count, per, now))
        log = logged(log, count, k, now)
        starts += [now] * k
    for first in starts:
        assert sum(1 for s in starts if first <= s < first + per) <= count


def test_driver_checks_refuse_a_queue_limited_twice() -> None:
    with pytest.raises(InvalidArgument, match="more than one rate limit"):
        check_rate_limits([RateLimit("q", 1, 1.0), RateLimit("q", 1, 1.0)])


async def test_a_sleep_on_a_moved_clock_ends_at_its_reading_even_if_passed_before_it_began() -> (
    None
):
    clock = FakeClock(NOW)
    stopping = asyncio.Event()
    clock.advance(5)  # the clock passed the end before the sleep began
    await asyncio.wait_for(sleep_on(clock, 3.0, stopping, since=NOW), timeout=1)
    sleeping = asyncio.create_task(sleep_on(clock, 3.0, stopping))
    await asyncio.sleep(0.02)
    assert not sleeping.done()
    clock.advance(3)
    await asyncio.wait_for(sleeping, timeout=1)
    stopped = asyncio.create_task(sleep_on(clock, 60.0, stopping))
    stopping.set()
    await asyncio.wait_for(stopped, timeout=1)
