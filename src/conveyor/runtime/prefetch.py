"""How many jobs a worker may lease beyond its concurrency (leased ahead of a free slot).

A worker whose slots are all busy would otherwise send its next fetch only once slots free, and
then wait for that round trip with nothing to run: with short jobs, that wait is a large part of
each cycle. A job leased ahead waits in the worker (its lease renewed) and starts the moment a
slot frees, so the next fetch's round trip overlaps the jobs that run now.

The cost is fairness: a job leased ahead cannot be taken by another, idle worker. It waits about
as long as the jobs ahead of it take to free a slot, so ``"auto"`` leases ahead only while the
worker's recent jobs are short (their moving average below :data:`SHORT_JOB` seconds), and up to
one slot's worth per slot (``concurrency`` jobs). Before any job has finished it leases nothing
ahead. Nor does it where leasing ahead does not pay (a backend without
``Capability.LEASE_AHEAD``: measured, PostgreSQL drained no faster, and on SQLite a bigger fetch
holds the file's write lock longer, which producers wait for).

A number sets the limit outright (``0``: never), whatever the jobs take and whatever the
backend. Neither leases ahead for a worker whose jobs are rate limited or grouped: a limit
counts starts, and a job leased in one window would start in a later one; a grouped job's
``RateLimited`` pauses its group, which jobs of the group leased ahead already passed. Jobs
that wait too long for a slot are handed back (:mod:`conveyor.runtime.ahead`), after which none
is leased ahead until a job has finished.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final, Literal

from conveyor.drivers.protocol import Capability

if TYPE_CHECKING:
    from conveyor._config import WorkerConfig
    from conveyor._definition import JobDef

# Jobs shorter than this on average are leased ahead by "auto": a job leased ahead then waits
# at most about this long for a slot, less than a fetch from another worker would often take.
SHORT_JOB: Final = 0.010
# Weight of the latest run time in the moving average: about the last twenty jobs count.
WEIGHT: Final = 0.1

PrefetchSetting = int | Literal["auto"]


def check_prefetch(value: object) -> None:
    """Raise ValueError unless ``value`` is a valid ``WorkerConfig.prefetch``."""
    if value == "auto" and isinstance(value, str):
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"prefetch must be 'auto' or an int >= 0, got {value!r}")


class Prefetch:
    """The limit in force for one worker, from its setting and its jobs' run times."""

    __slots__ = ("_allowed", "_auto", "_average", "_concurrency", "_held_off", "_setting")

    def __init__(
        self,
        setting: PrefetchSetting,
        concurrency: int,
        *,
        auto: bool = True,
        allowed: bool = True,
    ) -> None:
        """``auto``: whether ``"auto"`` may lease ahead at all (the backend's fetch is a round
        trip worth hiding). ``allowed``: whether any setting may (not for a worker whose jobs
        are rate limited or grouped, see :func:`prefetch_for`)."""
        check_prefetch(setting)
        self._setting = setting
        self._concurrency = concurrency
        self._auto = auto
        self._allowed = allowed
        self._average: float | None = None  # moving average of run times, seconds
        self._held_off = False  # jobs ahead waited too long; until a job finishes

    @property
    def most(self) -> int:
        """The most jobs this worker may ever lease ahead, whatever its jobs take."""
        if not self._allowed:
            return 0
        if isinstance(self._setting, int):
            return self._setting
        return self._concurrency if self._auto else 0

    def observe(self, duration: float) -> None:
        """Note one finished job's run time (seconds)."""
        if not 0.0 <= duration < math.inf:  # NaN, negative (a clock step) or infinite
            return
        self._held_off = False
        average = self._average
        self._average = duration if average is None else average + WEIGHT * (duration - average)

    def hold_off(self) -> None:
        """Jobs leased ahead waited too long for a slot: none is leased ahead until a job has
        finished (whatever the setting), and for ``"auto"`` its run time starts the average
        anew."""
        self._held_off = True
        self._average = None

    @property
    def limit(self) -> int:
        """Jobs that may be leased now beyond the concurrency."""
        if self._held_off:
            return 0
        if isinstance(self._setting, int):
            return self.most
        average = self._average
        return self.most if average is not None and average < SHORT_JOB else 0


def prefetch_for(
    config: WorkerConfig,
    capabilities: Iterable[Capability],
    definitions: Iterable[JobDef[Any, Any]],
) -> Prefetch:
    """The prefetch policy of a worker with ``config`` on a backend with ``capabilities``,
    serving ``definitions``."""
    return Prefetch(
        config.prefetch,
        config.concurrency,
        auto=Capability.LEASE_AHEAD in capabilities,
        # A rate limit counts starts: a job leased in one window would start in a later one.
        # And a grouped job's RateLimited pauses its group, which jobs of that group leased
        # ahead would already have passed.
        allowed=not any(
            d.rate_limit is not None or d.group_rate is not None or d.group_key is not None
            for d in definitions
        ),
    )
