"""Rules every driver applies the same way, kept in one place so the backends cannot drift.

What happens next to a job is decided in the core (``conveyor.core``); a driver makes the chosen
transition atomic. Two rules must still be checked inside the atomic step, because what they
depend on can change between the decision and the write; each is named here, documented once,
and pinned by the conformance suite:

* **Cancel wins** (:data:`RUNS_AGAIN`): a transition that would run the job again (retry,
  snooze, hand-back, a rescue's requeue) of a job with a pending cancel request ends it
  ``cancelled`` instead, with :func:`cancelled_error` of the reason it would have run again.
  A cancel can land after the worker decided, so only the write can see it.
* **Fenced by token**: a finish or rescue applies only while the job is ``active`` with the lease
  token the caller holds. A finish repeated after its reply was lost finds the job no longer
  active but still carrying that token, and reports ``ok`` without applying anything twice
  (:func:`finish_was_applied`).

The rest are shared helpers: input checks made before anything is written, the run order of
queued jobs, and the bounded history of attempt errors.
"""

from __future__ import annotations

import heapq
import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar, cast

from conveyor import _validation
from conveyor._errors import InvalidArgument
from conveyor.core.headers import MAX_HEADERS_BYTES
from conveyor.drivers.groups import check_group
from conveyor.drivers.rates import MAX_RATE_COUNT, MAX_RATE_SECONDS
from conveyor.drivers.records import (
    WAITING_STATES,
    AttemptError,
    CronFire,
    CronFireStatus,
    CronInfo,
    CronSchedule,
    Dedup,
    DedupMode,
    FinishJob,
    InsertStatus,
    JobRecord,
    JobState,
    NewJob,
    ProgressUpdate,
    QueueStats,
    RateLimit,
    RescueJob,
    TransitionKind,
)

T = TypeVar("T")

RETRYABLE_STATES: Final = frozenset({JobState.FAILED, JobState.CANCELLED})

# Cancel wins: finishes that would run the job again; a pending cancel turns them into a
# cancellation.
RUNS_AGAIN: Final = frozenset({TransitionKind.RETRY, TransitionKind.SNOOZE, TransitionKind.REQUEUE})
RESCUE_KINDS: Final = frozenset(
    {TransitionKind.REQUEUE, TransitionKind.FAIL, TransitionKind.CANCEL}
)

CANCELLED_ERROR: Final = "cancelled"
LOST_WHILE_CANCELLING: Final = "the worker lost the job before it stopped"

# A job keeps the errors of its last HISTORY_LIMIT attempts, each cut to HISTORY_ERROR_CHARS
# (the latest error is also kept whole in ``JobRecord.error``).
HISTORY_LIMIT: Final = 20
HISTORY_ERROR_CHARS: Final = 2000

# A progress message is at most this many characters (``JobContext.progress`` cuts longer ones).
PROGRESS_MESSAGE_CHARS: Final = 500

# Per-minute throughput buckets (``QueueStats``) are kept this long: the dashboard shows the
# last hour, and a little more lets a reader compare with the hour before.
STATS_KEEP_MINUTES: Final = 180
# The most buckets one ``stats_add`` call may carry (a worker flushes every few seconds, so a
# handful per queue; the cap keeps one call's work bounded).
STATS_MAX_SAMPLES: Final = 1000


def resolve_now(now: float | None) -> float:
    """The caller's ``now``, or this host's clock when it is ``None``."""
    return time.time() if now is None else now


# -- input checks: a batch is refused whole, before anything of it is written -----------------


def check_now(now: float | None) -> None:
    if now is not None and not (math.isfinite(now) and 0 <= now < _validation.MAX_EPOCH):
        raise InvalidArgument(f"now must be a finite epoch time between 1970 and 2200, got {now!r}")


def _check_text(text: str | None, what: str) -> None:
    if text is None:
        return
    if "\x00" in text:  # PostgreSQL's text cannot hold one; no backend may differ from it
        raise InvalidArgument(
            f"{what} holds a NUL character; make it writable first "
            "(conveyor.core.serialization.writable_text)"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgument(
            f"{what} is not valid text ({exc.reason} at {exc.start}); make it writable first "
            "(conveyor.core.serialization.writable_text)"
        ) from None


def check_new_jobs(jobs: Sequence[NewJob]) -> None:
    """Refuse a batch holding a job whose numbers or text a backend could not store exactly."""
    for job in jobs:
        for text, what in ((job.id, "id"), (job.name, "name"), (job.queue, "queue")):
            _check_text(text, f"job {job.id!r}: {what}")
        if job.run_at is not None and not (
            math.isfinite(job.run_at) and 0 <= job.run_at < _validation.MAX_EPOCH
        ):
            raise InvalidArgument(f"job {job.id!r}: run_at must be between 1970 and 2200")
        _validation.seconds(job.delay, f"job {job.id!r}: delay", error=InvalidArgument)
        _validation.priority(job.priority, f"job {job.id!r}: priority", error=InvalidArgument)
        _validation.attempts(
            job.max_attempts, f"job {job.id!r}: max_attempts", error=InvalidArgument
        )
        if job.dedup is not None:
            check_dedup(job)
        if job.group is not None:
            check_group(job.id, job.group)
        keeps = ((job.keep_completed, "keep_completed"), (job.keep_failed, "keep_failed"))
        for keep, what in keeps:
            if keep is not None:
                _validation.seconds(keep, f"job {job.id!r}: {what}", error=InvalidArgument)
        if job.headers is not None:
            check_headers(job.id, job.headers)


def check_headers(job_id: str, headers: str) -> None:
    """Refuse stored headers that are not a JSON object of text within the size limit (the
    core builds them with ``encode_headers``; this guards a driver's other callers)."""
    _check_text(headers, f"job {job_id!r}: headers")
    size = len(headers.encode())
    if size > MAX_HEADERS_BYTES:
        raise InvalidArgument(
            f"job {job_id!r}: headers take {size} bytes, over the limit of {MAX_HEADERS_BYTES}"
        )
    try:
        value: object = json.loads(headers)
    except ValueError:
        value = None
    pairs = cast(dict[object, object], value).items() if isinstance(value, dict) else None
    if pairs is None or not all(
        isinstance(k, str) and isinstance(v, str) and "\x00" not in k and "\x00" not in v
        for k, v in pairs
    ):
        raise InvalidArgument(
            f"job {job_id!r}: headers must be a JSON object of text to text, without NUL"
        )


def check_stats(samples: Sequence[QueueStats]) -> None:
    """Refuse a ``stats_add`` batch a backend could not apply exactly, before any write."""
    if len(samples) > STATS_MAX_SAMPLES:
        raise InvalidArgument(
            f"at most {STATS_MAX_SAMPLES} stats buckets per call, got {len(samples)}"
        )
    for sample in samples:
        _check_text(sample.queue, "stats: queue")
        numbers: tuple[tuple[object, str], ...] = (
            (sample.minute, "minute"),
            (sample.completed, "completed"),
            (sample.retried, "retried"),
            (sample.failed, "failed"),
        )
        for value, what in numbers:
            if type(value) is not int or not 0 <= value < 2**53:
                raise InvalidArgument(
                    f"stats of queue {sample.queue!r}: {what} must be a whole number from 0 "
                    f"to 2**53, got {value!r}"
                )


def check_ids(ids: Sequence[str]) -> None:
    """Refuse ids a backend could not look up exactly (before any write)."""
    for job_id in ids:
        if not isinstance(job_id, str):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise InvalidArgument(f"a job id must be text, got {job_id!r}")
        _check_text(job_id, "job id")


CRON_ID_PREFIX: Final = "cron:"


def cron_job_id(name: str, tick: int) -> str:
    """The id of the job tick ``tick`` of schedule ``name`` inserts: the same in every process."""
    return f"{CRON_ID_PREFIX}{name}:{tick}"


def check_cron_schedules(schedules: Sequence[CronSchedule]) -> None:
    for schedule in schedules:
        for text, what in (
            (schedule.name, "name"),
            (schedule.queue, "queue"),
            (schedule.job_name, "job name"),
            (schedule.expression, "expression"),
            (schedule.tz, "tz"),
        ):
            if not isinstance(cast(object, text), str) or not text:
                raise InvalidArgument(f"schedule {schedule.name!r}: {what} must be a text")
            _check_text(text, f"schedule {schedule.name!r}: {what}")
        if schedule.catch_up not in ("skip", "latest"):
            raise InvalidArgument(
                f"schedule {schedule.name!r}: catch_up is 'skip' or 'latest', "
                f"got {schedule.catch_up!r}"
            )
        if schedule.overlap not in ("allow", "skip"):
            raise InvalidArgument(
                f"schedule {schedule.name!r}: overlap is 'allow' or 'skip', "
                f"got {schedule.overlap!r}"
            )


def check_cron_fire(fire: CronFire) -> None:
    """Refuse a fire whose tick is not whole epoch seconds, or whose job is not that tick's."""
    tick = cast(object, fire.tick)
    if (
        not isinstance(tick, int)
        or isinstance(tick, bool)
        or not 0 <= fire.tick < _validation.MAX_EPOCH
    ):
        raise InvalidArgument(
            f"schedule {fire.name!r}: a tick is whole epoch seconds, got {tick!r}"
        )
    if fire.job.id != cron_job_id(fire.name, fire.tick):
        raise InvalidArgument(
            f"schedule {fire.name!r}: the job of tick {fire.tick} must have id "
            f"{cron_job_id(fire.name, fire.tick)!r}, not {fire.job.id!r}"
        )
    check_new_jobs([fire.job])


def cron_info_of(row: Any) -> CronInfo:
    """A ``cron_list`` row (SQLite or PostgreSQL) as a :class:`CronInfo`."""
    schedule = CronSchedule(
        row["name"],
        row["queue"],
        row["job_name"],
        row["expression"],
        row["tz"],
        row["catch_up"],
        row["overlap"],
    )
    return CronInfo(
        schedule,
        registered_at=float(row["registered_at"]),
        last_tick=None if row["last_tick"] is None else int(row["last_tick"]),
        last_status=None if row["last_status"] is None else CronFireStatus(row["last_status"]),
        last_fired_at=None if row["last_fired_at"] is None else float(row["last_fired_at"]),
        last_job_id=row["last_job_id"],
    )


def check_progress(updates: Sequence[ProgressUpdate]) -> None:
    """Refuse a batch holding an invalid progress update (a fraction outside 0..1, a message
    too long or not writable, no token), naming the job, before anything of it is written."""
    for update in updates:
        fraction = cast(object, update.fraction)
        if (
            not isinstance(fraction, int | float)
            or isinstance(fraction, bool)
            or not 0.0 <= fraction <= 1.0
        ):
            raise InvalidArgument(
                f"job {update.job_id!r}: progress must be a number from 0 to 1, "
                f"got {update.fraction!r}"
            )
        if not update.token:
            raise InvalidArgument(f"job {update.job_id!r}: progress needs the lease token")
        message = cast(object, update.message)
        if message is not None and (
            not isinstance(message, str) or len(message) > PROGRESS_MESSAGE_CHARS
        ):
            raise InvalidArgument(
                f"job {update.job_id!r}: a progress message must be text of at most "
                f"{PROGRESS_MESSAGE_CHARS} characters"
            )
        _check_text(update.message, f"job {update.job_id!r}: progress message")


def expiry(
    state: JobState, at: float, keep_completed: float | None, keep_failed: float | None
) -> float | None:
    """When a job that reaches ``state`` at ``at`` expires under its own retention: ``completed``
    keeps it ``keep_completed`` seconds, ``failed`` ``keep_failed``; None: the queue's policy."""
    keep = (
        keep_completed
        if state is JobState.COMPLETED
        else keep_failed
        if state is JobState.FAILED
        else None
    )
    return None if keep is None else at + keep


def check_finishes(finishes: Sequence[FinishJob]) -> None:
    """Refuse a batch holding an invalid finish (an unknown kind, a delay that is not a finite
    number of seconds within 100 years), naming the job, before anything of it is applied."""
    for finish in finishes:
        kind = cast(object, finish.kind)  # a caller outside the checker's view may pass anything
        if not isinstance(kind, TransitionKind):
            raise InvalidArgument(f"job {finish.job_id!r}: unknown transition {finish.kind!r}")
        # The worker's finishes have no delay and no error almost always: the messages naming
        # the job are only built for a value that needs the full check.
        delay = cast(object, finish.delay)
        if not (type(delay) is float and 0.0 <= delay <= _validation.MAX_SECONDS):
            _validation.seconds(delay, f"job {finish.job_id!r}: delay", error=InvalidArgument)
        if not finish.token:
            raise InvalidArgument(f"job {finish.job_id!r}: a finish needs the lease token")
        if finish.error is not None:
            _check_text(finish.error, f"job {finish.job_id!r}: error")


def check_rate_limits(limits: Sequence[RateLimit]) -> None:
    """Refuse limits a backend could not keep exactly: a count outside 1 to
    :data:`MAX_RATE_COUNT`, a window that is not a positive number of seconds up to a day, or a
    queue limited twice."""
    seen: set[str] = set()
    for limit in limits:
        _check_text(limit.queue, f"rate limit of queue {limit.queue!r}: queue")
        count = cast(object, limit.count)
        if (
            not isinstance(count, int)
            or isinstance(count, bool)
            or not 1 <= count <= MAX_RATE_COUNT
        ):
            raise InvalidArgument(
                f"rate limit of queue {limit.queue!r}: count must be a whole number from 1 to "
                f"{MAX_RATE_COUNT}, got {limit.count!r}"
            )
        check_rate_seconds(limit.per, f"rate limit of queue {limit.queue!r}: per", positive=True)
        if limit.queue in seen:
            raise InvalidArgument(f"queue {limit.queue!r} has more than one rate limit")
        seen.add(limit.queue)


def check_rate_seconds(value: object, what: str, *, positive: bool = False) -> float:
    """A rate limit's window or block: finite seconds, at most :data:`MAX_RATE_SECONDS`."""
    seconds = _validation.seconds(value, what, error=InvalidArgument, positive=positive)
    if seconds > MAX_RATE_SECONDS:
        raise InvalidArgument(f"{what} must be at most {MAX_RATE_SECONDS:g} s, got {value!r}")
    return seconds


def check_rescues(rescues: Sequence[RescueJob]) -> None:
    for rescue in rescues:
        if rescue.kind not in RESCUE_KINDS:
            raise InvalidArgument(
                f"job {rescue.job_id!r}: a rescue requeues, fails or cancels, not {rescue.kind!r}"
            )
        stalls = cast(object, rescue.stalls)
        if not isinstance(stalls, int) or rescue.stalls < 0:
            raise InvalidArgument(f"job {rescue.job_id!r}: invalid stall count {rescue.stalls!r}")
        _check_text(rescue.error, f"job {rescue.job_id!r}: error")


# -- the two rules checked inside the atomic step ----------------------------------------------


def cancelled_error(error: str | None) -> str:
    """The error of a job cancelled on request instead of being run again: ``cancelled``,
    followed by the reason it would have run again, if any."""
    return CANCELLED_ERROR if not error else f"{CANCELLED_ERROR}: {error}"


def cancel_wins(kind: TransitionKind, cancel_requested: bool) -> bool:
    """Whether a pending cancel request turns this transition into a cancellation."""
    return cancel_requested and kind in RUNS_AGAIN


def finish_was_applied(job: JobRecord, token: str) -> bool:
    """A finish with ``token`` finds ``job`` already moved on by an earlier call with the same
    token (its reply was lost and the caller tried again): nothing to do, and nothing lost."""
    return job.state is not JobState.ACTIVE and job.lease_token == token


# -- run order ---------------------------------------------------------------------------------

RunOrder = tuple[int, float, int]


def run_order(job: JobRecord) -> RunOrder:
    """The order queued jobs run in: lowest priority first, then earliest run time, then
    enqueue order."""
    return (job.priority, job.run_at, job.seq)


def first_in_run_order(candidates: Iterable[tuple[RunOrder, T]], limit: int) -> list[T]:
    """Of each queue's first candidates, the overall first ``limit`` in run order: how a fetch
    over several queues picks what to lease (each queue offers at most ``limit`` of its own)."""
    return [item for _, item in heapq.nsmallest(max(limit, 0), candidates, key=lambda c: c[0])]


# -- history -------------------------------------------------------------------------------------


def with_error(
    history: Sequence[AttemptError], attempt: int, at: float, error: str
) -> tuple[AttemptError, ...]:
    """``history`` with one more entry, keeping the last :data:`HISTORY_LIMIT`."""
    entry = AttemptError(attempt, at, error[:HISTORY_ERROR_CHARS])
    return (*history, entry)[-HISTORY_LIMIT:]


def history_to_json(history: Sequence[AttemptError]) -> str:
    return json.dumps([[e.attempt, e.at, e.error] for e in history], separators=(",", ":"))


def history_from_json(text: str | bytes | None) -> tuple[AttemptError, ...]:
    """Read a stored history; anything unreadable reads as no history (inspection must work
    around a job written by a foreign producer)."""
    if not text:
        return ()
    try:
        entries = json.loads(text)
        return tuple(AttemptError(int(a), float(t), str(e)) for a, t, e in entries)
    except (ValueError, TypeError):
        return ()


# -- dedup keys: when a key is held ------------------------------------------------------------
#
# A dedup record maps (queue, key) to the job that took the key, its mode and (THROTTLE) when
# it expires. Whether the key is still held is decided lazily, at the next insert with that
# key, from the holder job as it is then, so fetch, finish and rescue need not know of keys. A
# holder that no longer exists (pruned, purged) holds nothing, and its record goes with it.

DEDUP_KEY_CHARS: Final = 1000


@dataclass(frozen=True, slots=True)
class DedupHolder:
    """The job holding a dedup key, as the insert's atomic step reads it."""

    job_id: str
    name: str
    mode: DedupMode  # the mode the holder took the key with: it says how long it is held
    expires_at: float | None  # THROTTLE: the end of the window
    state: JobState
    started: bool  # ever fetched (its ``started_at`` is set)
    run_at: float


def check_dedup(job: NewJob) -> None:
    """Refuse a dedup key or mode a backend could not apply exactly, naming the job."""
    dedup = cast(object, job.dedup)
    if not isinstance(dedup, Dedup):
        raise InvalidArgument(f"job {job.id!r}: dedup must be a Dedup, got {dedup!r}")
    if not isinstance(cast(object, dedup.mode), DedupMode):
        raise InvalidArgument(f"job {job.id!r}: unknown dedup mode {dedup.mode!r}")
    key = cast(object, dedup.key)
    if not isinstance(key, str) or not 1 <= len(key) <= DEDUP_KEY_CHARS:
        raise InvalidArgument(
            f"job {job.id!r}: dedup key must be text of 1 to {DEDUP_KEY_CHARS} characters, "
            f"got {key!r}"
        )
    _check_text(key, f"job {job.id!r}: dedup key")
    if dedup.mode is DedupMode.THROTTLE:
        _validation.seconds(
            dedup.seconds, f"job {job.id!r}: throttle ttl", error=InvalidArgument, positive=True
        )
    elif dedup.seconds != 0:
        raise InvalidArgument(f"job {job.id!r}: only a throttle has dedup seconds")
    if dedup.mode is DedupMode.DEBOUNCE and (job.run_at is not None or not job.delay > 0):
        raise InvalidArgument(
            f"job {job.id!r}: a debounced job runs its delay after the last enqueue: it needs "
            "a delay greater than 0 and no run_at"
        )


def dedup_expiry(dedup: Dedup, now: float) -> float | None:
    """When a key taken at ``now`` stops being held whatever its holder does (THROTTLE)."""
    return now + dedup.seconds if dedup.mode is DedupMode.THROTTLE else None


def dedup_held(holder: DedupHolder, now: float) -> bool:
    """Whether ``holder`` still holds its key at ``now``, by the mode it took the key with:
    UNTIL_STARTED while it waits and has never started; UNTIL_FINISHED until it is completed,
    failed or cancelled; THROTTLE until the window ends; DEBOUNCE while it waits for a run time
    still to come and has never started (once due, it runs with what it has, and the next
    enqueue starts a new job)."""
    mode = holder.mode
    if mode is DedupMode.UNTIL_STARTED:
        return holder.state in WAITING_STATES and not holder.started
    if mode is DedupMode.UNTIL_FINISHED:
        return not holder.state.is_terminal
    if mode is DedupMode.THROTTLE:
        return holder.expires_at is not None and now < holder.expires_at
    return holder.state is JobState.SCHEDULED and not holder.started and holder.run_at > now


def dedup_decision(holder: DedupHolder | None, new: NewJob, now: float) -> InsertStatus:
    """What inserting ``new`` (which has a dedup key) does, given the key's holder (None: no
    record, or its job is gone): INSERTED (the key is free: the new job is inserted and takes
    it), DUPLICATE (the holder is returned, nothing written) or REPLACED (both debounce, same
    job name: the holder gets the new job's payload and run time, nothing else)."""
    if holder is None or not dedup_held(holder, now):
        return InsertStatus.INSERTED
    if (
        holder.mode is DedupMode.DEBOUNCE
        and new.dedup is not None
        and new.dedup.mode is DedupMode.DEBOUNCE
        and holder.name == new.name
    ):
        return InsertStatus.REPLACED
    return InsertStatus.DUPLICATE
