"""Dedup modes of ``enqueue(..., dedup=...)``: one job per key, for as long as the mode says.

A job's ``job_id`` deduplicates until that job is pruned. A dedup mode deduplicates by a key
instead, for a bounded time, so the same work can be enqueued again once the earlier job has
moved on:

* :class:`UntilStarted`: while the job holding the key waits and has never started.
* :class:`UntilFinished`: until it is completed, failed or cancelled.
* :class:`Throttle`: for ``ttl`` after it took the key (one job per key per window).
* :class:`Debounce`: the job runs ``delay`` after the last enqueue with the key: an enqueue while
  the job still waits replaces its payload and pushes its run time back.

``key`` defaults to the job's name and a digest of its payload (the same job with the same
arguments); keys are scoped to the job's queue. A key held by another job makes the enqueue a
duplicate: the handle points at that job (``handle.outcome`` says which of
:class:`conveyor.InsertStatus` happened).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeAlias

from conveyor import _validation
from conveyor._errors import InvalidArgument
from conveyor.drivers.common import DEDUP_KEY_CHARS
from conveyor.drivers.records import Dedup, DedupMode


def _check_key(key: object, what: str) -> None:
    if key is None:
        return
    if not isinstance(key, str) or not 1 <= len(key) <= DEDUP_KEY_CHARS:
        raise InvalidArgument(
            f"{what}: key must be text of 1 to {DEDUP_KEY_CHARS} characters, got {key!r}"
        )
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
        raise InvalidArgument(f"{what}: key must hold no control characters, got {key!r}")


@dataclass(frozen=True, slots=True)
class UntilStarted:
    """One waiting job per key: an enqueue is a duplicate while the job holding the key waits
    and has never started."""

    key: str | None = None

    def __post_init__(self) -> None:
        _check_key(self.key, "UntilStarted")


@dataclass(frozen=True, slots=True)
class UntilFinished:
    """One unfinished job per key: an enqueue is a duplicate until the job holding the key is
    completed, failed or cancelled."""

    key: str | None = None

    def __post_init__(self) -> None:
        _check_key(self.key, "UntilFinished")


@dataclass(frozen=True, slots=True)
class Throttle:
    """One job per key per ``ttl`` (seconds or a timedelta): an enqueue is a duplicate until
    ``ttl`` after the job holding the key was enqueued, whatever that job does meanwhile."""

    ttl: float | timedelta
    key: str | None = None

    def __post_init__(self) -> None:
        _validation.seconds(self.ttl, "Throttle ttl", error=InvalidArgument, positive=True)
        _check_key(self.key, "Throttle")


@dataclass(frozen=True, slots=True)
class Debounce:
    """The job runs ``delay`` (seconds or a timedelta) after the last enqueue with the key: an
    enqueue while the job holding the key still waits for its run time replaces that job's
    payload and run time (``InsertStatus.REPLACED``). Once it is due it runs with what it
    has, and the next enqueue makes a new job."""

    delay: float | timedelta
    key: str | None = None

    def __post_init__(self) -> None:
        _validation.seconds(self.delay, "Debounce delay", error=InvalidArgument, positive=True)
        _check_key(self.key, "Debounce")


DedupPolicy: TypeAlias = UntilStarted | UntilFinished | Throttle | Debounce


def default_key(name: str, payload: bytes) -> str:
    """The job's name and a digest of its payload's canonical JSON (keys sorted, no spaces):
    the same job with the same arguments has the same key, however its JSON was laid out."""
    canonical = json.dumps(
        json.loads(payload), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return f"{name}:{hashlib.sha256(canonical.encode()).hexdigest()[:32]}"


def dedup_of(
    policy: object,
    name: str,
    payload: bytes,
    delay: float | timedelta | None,
    run_at: datetime | None,
) -> tuple[Dedup | None, float | timedelta | None]:
    """The driver's dedup value for ``policy`` and the job's delay (a debounce's delay is the
    job's), or InvalidArgument naming what was wrong."""
    if policy is None:
        return None, delay
    if not isinstance(policy, UntilStarted | UntilFinished | Throttle | Debounce):
        raise InvalidArgument(
            f"dedup must be UntilStarted(), UntilFinished(), Throttle(ttl) or Debounce(delay), "
            f"got {policy!r}"
        )
    key = default_key(name, payload) if policy.key is None else policy.key
    if isinstance(policy, Throttle):
        ttl = _validation.seconds(policy.ttl, "Throttle ttl", error=InvalidArgument)
        return Dedup(DedupMode.THROTTLE, key, ttl), delay
    if isinstance(policy, Debounce):
        if delay is not None or run_at is not None:
            raise InvalidArgument(
                "a debounced job runs its Debounce delay after the last enqueue: "
                "pass no delay or run_at with dedup=Debounce(...)"
            )
        return Dedup(DedupMode.DEBOUNCE, key), policy.delay
    if isinstance(policy, UntilStarted):
        return Dedup(DedupMode.UNTIL_STARTED, key), delay
    return Dedup(DedupMode.UNTIL_FINISHED, key), delay
