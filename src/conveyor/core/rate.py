"""Rate limits: at most ``count`` jobs of a definition start in any window of ``per``.

``Rate`` is the value a definition declares; :mod:`conveyor.drivers.rates` is the sliding log
every backend keeps to enforce it inside the atomic fetch.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import cast

from conveyor import _validation
from conveyor._errors import InvalidJobDefinition
from conveyor.drivers.rates import MAX_RATE_COUNT, MAX_RATE_SECONDS


@dataclass(frozen=True, slots=True, init=False)
class Rate:
    """At most ``count`` starts in any window of ``per`` (a timedelta or seconds):
    ``job(..., rate_limit=Rate(100, per=timedelta(seconds=1)))``."""

    count: int
    per: float  # seconds

    def __init__(self, count: int, per: float | timedelta) -> None:
        given = cast(object, count)  # a caller outside the checker's view may pass anything
        if (
            not isinstance(given, int)
            or isinstance(given, bool)
            or not 1 <= given <= MAX_RATE_COUNT
        ):
            raise InvalidJobDefinition(
                f"Rate count must be a whole number from 1 to {MAX_RATE_COUNT:_}, got {count!r}"
            )
        seconds = _validation.seconds(per, "Rate per", error=InvalidJobDefinition, positive=True)
        if seconds > MAX_RATE_SECONDS:
            raise InvalidJobDefinition(
                f"Rate per must be at most a day ({MAX_RATE_SECONDS:g} s), got {per!r}"
            )
        object.__setattr__(self, "count", count)
        object.__setattr__(self, "per", seconds)

    def __repr__(self) -> str:
        return f"Rate({self.count}, per={self.per:g}s)"
