"""The rate limits a worker enforces, from the definitions it serves.

A limit is kept per queue, so that a fetch never has to skip over jobs it may not start (which
would make its work grow with the backlog). A worker therefore refuses to start when a queue it
serves holds a rate-limited definition beside any other definition, or two definitions with
different limits: each rate-limited definition needs a queue of its own
(``job(..., queue="...")``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from conveyor._definition import JobDef
from conveyor._errors import InvalidJobDefinition
from conveyor.core.clock import Clock
from conveyor.drivers.records import RateLimit


def rate_limits(
    definitions: Iterable[JobDef[Any, Any]], queues: Iterable[str]
) -> tuple[RateLimit, ...]:
    """The limit of each served queue that has one; raises :class:`InvalidJobDefinition`
    naming both definitions when a rate-limited one shares its queue."""
    served = set(queues)
    by_queue: dict[str, list[JobDef[Any, Any]]] = {}
    for definition in definitions:
        by_queue.setdefault(definition.queue, []).append(definition)
    limits: list[RateLimit] = []
    for queue, sharing in sorted(by_queue.items()):
        limited = [d for d in sharing if d.rate_limit is not None]
        if not limited or queue not in served:
            continue
        first = limited[0]
        other = next((d for d in sharing if d is not first), None)
        if other is not None:
            raise InvalidJobDefinition(
                f"job {first.name!r} has rate_limit={first.rate_limit!r} but shares queue "
                f"{queue!r} with job {other.name!r} "
                f"({'rate_limit=' + repr(other.rate_limit) if other.rate_limit else 'no limit'}):"
                " a rate limit is kept per queue, so a rate-limited job needs a queue of its "
                f'own; declare it with job(..., queue="{first.name}")'
            )
        assert first.rate_limit is not None
        limits.append(RateLimit(queue, first.rate_limit.count, first.rate_limit.per))
    return tuple(limits)


def describe(limits: Iterable[RateLimit]) -> str:
    """For the worker's start-up line: ``queue: 50 per 1s, ...`` (empty when none)."""
    return ", ".join(f"{limit.queue}: {limit.count} per {limit.per:g}s" for limit in limits)


# How often a sleep on a clock a test moves by hand looks at it again.
_FAKE_CLOCK_CHECK = 0.005


async def sleep_on(
    clock: Clock, seconds: float, stopping: asyncio.Event, *, since: float | None = None
) -> None:
    """Wait ``seconds`` on the worker's clock, or until ``stopping`` is set: real time on the
    backend's clock; on a clock that returns its own time (``FakeClock``), until it reads
    ``since + seconds`` (``since``: the reading the wait was worked out at, else now), so a test
    that advances it drives the worker, even past the end before the sleep begins."""
    start = clock.now() if since is None else since
    if start is None:
        try:
            async with asyncio.timeout(seconds):
                await stopping.wait()
        except TimeoutError:
            pass
        return
    while not stopping.is_set():
        now = clock.now()
        if now is None or now - start >= seconds:
            return
        try:
            async with asyncio.timeout(_FAKE_CLOCK_CHECK):
                await stopping.wait()
        except TimeoutError:
            pass
