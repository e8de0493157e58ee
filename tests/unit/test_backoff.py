"""Backoff strategies: bounds, jitter, caps and validation."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.core.backoff import DEFAULT_BACKOFF, Exponential, Fixed

bases = st.floats(min_value=0.0, max_value=1e6, allow_nan=False)
factors = st.floats(min_value=1.0, max_value=100.0, allow_nan=False)
caps = st.floats(min_value=0.0, max_value=1e7, allow_nan=False)
attempts = st.one_of(
    st.integers(min_value=1, max_value=64), st.integers(min_value=1, max_value=10**9)
)
seeds = st.integers(min_value=0, max_value=2**32 - 1)


def upper_bound(base: float, factor: float, cap: float, attempt: int) -> float:
    """``min(cap, base * factor**(attempt-1))`` computed without overflowing."""
    if base == 0.0:
        return 0.0
    if cap == 0.0:
        return 0.0
    if math.log(base) + (attempt - 1) * math.log(factor) >= math.log(cap):
        return cap
    return min(cap, base * factor ** (attempt - 1))


@given(base=bases, factor=factors, cap=caps, attempt=attempts, seed=seeds)
def test_full_jitter_stays_within_zero_and_the_capped_exponential(
    base: float, factor: float, cap: float, attempt: int, seed: int
) -> None:
    backoff = Exponential(base=base, factor=factor, cap=cap, jitter=True)
    delay = backoff.delay(attempt, random.Random(seed))
    assert 0.0 <= delay <= upper_bound(base, factor, cap, attempt) * (1 + 1e-12)


@given(base=bases, factor=factors, cap=caps, attempt=attempts)
def test_without_jitter_the_delay_is_the_capped_exponential(
    base: float, factor: float, cap: float, attempt: int
) -> None:
    backoff = Exponential(base=base, factor=factor, cap=cap, jitter=False)
    delay = backoff.delay(attempt, random.Random(0))
    assert delay == pytest.approx(upper_bound(base, factor, cap, attempt), rel=1e-9)


@given(seconds=st.floats(min_value=0.0, max_value=1e9, allow_nan=False), attempt=attempts)
def test_fixed_is_the_same_every_time(seconds: float, attempt: int) -> None:
    assert Fixed(seconds).delay(attempt, random.Random(attempt)) == seconds


@pytest.mark.parametrize("attempt", [10**3, 10**6, 10**12])
def test_cap_is_respected_at_huge_attempt_numbers(attempt: int) -> None:
    backoff = Exponential(base=1.0, factor=2.0, cap=3600.0, jitter=False)
    assert backoff.delay(attempt, random.Random(0)) == 3600.0
    jittered = Exponential(base=1.0, factor=2.0, cap=3600.0, jitter=True)
    assert 0.0 <= jittered.delay(attempt, random.Random(0)) <= 3600.0


def test_zero_base_stays_zero_at_huge_attempt_numbers() -> None:
    backoff = Exponential(base=0.0, factor=2.0, cap=3600.0, jitter=False)
    assert backoff.delay(10**6, random.Random(0)) == 0.0


def test_exponential_sequence_without_jitter() -> None:
    backoff = Exponential(base=1.0, factor=2.0, cap=10.0, jitter=False)
    rng = random.Random(0)
    assert [backoff.delay(n, rng) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_attempt_zero_or_negative_is_treated_as_the_first() -> None:
    backoff = Exponential(base=3.0, jitter=False)
    assert backoff.delay(0, random.Random(0)) == 3.0
    assert backoff.delay(-5, random.Random(0)) == 3.0


def test_jitter_is_reproducible_with_a_seeded_rng() -> None:
    backoff = Exponential(base=100.0, jitter=True)
    first = [backoff.delay(n, random.Random(11)) for n in range(1, 6)]
    second = [backoff.delay(n, random.Random(11)) for n in range(1, 6)]
    assert first == second


def test_jitter_actually_spreads_delays() -> None:
    backoff = Exponential(base=100.0, jitter=True)
    rng = random.Random(3)
    delays = {backoff.delay(1, rng) for _ in range(50)}
    assert len(delays) > 40
    assert all(0.0 <= d <= 100.0 for d in delays)


def test_default_backoff_is_full_jitter_from_one_second_capped_at_an_hour() -> None:
    assert Exponential(base=1.0, factor=2.0, cap=3600.0, jitter=True) == DEFAULT_BACKOFF


def test_strategies_are_frozen_values() -> None:
    assert Fixed(2.0) == Fixed(2.0)
    assert Exponential(base=2.0) != Exponential(base=3.0)
    with pytest.raises(AttributeError):
        Fixed(2.0).seconds = 3.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"base": -1.0}, "base and cap"),
        ({"cap": -1.0}, "base and cap"),
        ({"factor": 0.5}, "factor must be >= 1"),
    ],
)
def test_exponential_rejects_invalid_parameters(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Exponential(**kwargs)  # type: ignore[arg-type]


def test_fixed_rejects_a_negative_delay() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        Fixed(-0.5)


def test_fixed_zero_is_allowed() -> None:
    assert Fixed(0).delay(1, random.Random(0)) == 0


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_backoff_parameters_must_be_finite(value: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        Fixed(value)
    for name in ("base", "factor", "cap"):
        with pytest.raises(ValueError, match=f"{name}.*finite"):
            Exponential(**{name: value})  # type: ignore[arg-type]
