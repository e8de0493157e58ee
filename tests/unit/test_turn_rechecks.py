"""The looks a worker takes after a group's turn that a fetch did not see: how many and when."""

from __future__ import annotations

import pytest

from conveyor.runtime.fetcher import TURN_RECHECK_FIRST, next_recheck


def looks(poll_interval: float) -> list[float]:
    """The delays of every look after an awaited turn when none finds the group's job."""
    delays: list[float] = []
    delay: float | None = 0.0
    while delay is not None:
        delays.append(delay)
        assert len(delays) < 100, "the looks after a turn never end"
        delay = next_recheck(delay, poll_interval)
    return delays


def test_the_first_look_is_at_once_and_the_next_ones_double_below_the_poll_interval() -> None:
    assert looks(1.0) == [0.0, 0.05, 0.1, 0.2, 0.4, 0.8]
    assert TURN_RECHECK_FIRST == 0.05


@pytest.mark.parametrize("poll_interval", [0.01, 0.05, 0.3, 5.0, 30.0, 3600.0])
def test_the_looks_are_few_and_stay_below_the_poll_interval(poll_interval: float) -> None:
    delays = looks(poll_interval)
    assert delays[0] == 0.0
    assert all(d < poll_interval for d in delays[1:])
    assert len(delays) <= 18  # 0.05 s doubled 16 times is about an hour
