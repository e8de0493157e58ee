"""The inspect-and-repair half of :class:`conveyor.Queue`: reading jobs, queues and workers,
and moving jobs by hand (retry, cancel, delete, purge, pause)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from typing import Any, TypeVar

from conveyor._definition import JobDef, check_queue_name
from conveyor._errors import InvalidArgument
from conveyor._handle import JobHandle
from conveyor._jobinfo import JobInfo
from conveyor.core.clock import Clock
from conveyor.drivers.common import STATS_KEEP_MINUTES
from conveyor.drivers.records import (
    ChangeResult,
    CronInfo,
    JobState,
    ListParams,
    PurgeParams,
    QueueInfo,
    QueueStats,
    WorkerInfo,
)
from conveyor.engine import Engine

R = TypeVar("R")


class QueueInspection:
    """Mixed into :class:`conveyor.Queue`."""

    clock: Clock

    async def connect(self) -> Engine:
        raise NotImplementedError  # pragma: no cover - Queue defines it

    def handle(self, definition: JobDef[Any, R], job_id: str) -> JobHandle[R]:
        """A typed handle for a job enqueued earlier (e.g. by id kept in your database)."""
        return JobHandle(self, job_id, definition, duplicate=False)  # type: ignore[arg-type]

    async def get(self, job_id: str) -> JobInfo | None:
        driver = await self.connect()
        (record,) = await driver.job_get_many([job_id])
        return None if record is None else JobInfo.from_record(record)

    async def list_jobs(
        self,
        *,
        queue: str | None = None,
        state: JobState | str | Sequence[JobState | str] | None = None,
        name: str | None = None,
        before_seq: int | None = None,
        limit: int = 50,
    ) -> list[JobInfo]:
        """Newest first; pass the last item's ``seq`` as ``before_seq`` for the next page."""
        states = () if state is None else _states([state] if isinstance(state, str) else state)
        driver = await self.connect()
        records = await driver.job_list(ListParams(queue, states, name, before_seq, limit))
        return [JobInfo.from_record(r) for r in records]

    async def list_pages(
        self,
        *,
        queue: str | None = None,
        state: JobState | str | Sequence[JobState | str] | None = None,
        name: str | None = None,
        page_size: int = 500,
        limit: int | None = None,
    ) -> AsyncIterator[list[JobInfo]]:
        """The matching jobs page by page, newest first (``list_jobs`` with the keyset cursor
        moved along), until they run out or ``limit`` jobs were listed. The cursor, not the
        state, moves the scan on, so a caller may change the jobs of a page (retry, delete)
        before asking for the next."""
        if isinstance(page_size, bool) or page_size < 1:
            raise InvalidArgument(f"page_size must be at least 1, got {page_size!r}")
        listed = 0
        before: int | None = None
        while limit is None or listed < limit:
            want = page_size if limit is None else min(page_size, limit - listed)
            page = await self.list_jobs(
                queue=queue, state=state, name=name, before_seq=before, limit=want
            )
            if page:
                yield page
            listed += len(page)
            if len(page) < want:
                return
            before = page[-1].seq

    async def counts(self, queue: str | None = None) -> dict[JobState, int]:
        driver = await self.connect()
        return await driver.job_count_by_state(queue)

    async def retry(self, job_ids: Sequence[str]) -> list[ChangeResult]:
        """Move failed or cancelled jobs back to ``queued`` with one more attempt allowed."""
        ids = _job_ids(job_ids)
        driver = await self.connect()
        return await driver.job_retry_many(ids, now=self.clock.now())

    async def cancel(self, job_ids: Sequence[str]) -> list[ChangeResult]:
        """Cancel waiting jobs; a running job's worker is told to stop it."""
        ids = _job_ids(job_ids)
        driver = await self.connect()
        return await driver.job_cancel_many(ids, now=self.clock.now())

    async def purge(
        self,
        *,
        queue: str | None = None,
        states: Sequence[JobState | str] = (JobState.FAILED,),
        older_than: timedelta | None = None,
    ) -> int:
        """Delete finished jobs (failed by default); returns how many were deleted."""
        wanted = _states(states)
        unfinished = [s for s in wanted if not s.is_terminal]
        if unfinished:
            raise InvalidArgument(
                f"only finished jobs can be purged, not {unfinished[0].value!r}; "
                "cancel waiting jobs first"
            )
        now = self.clock.now()
        before = None
        if older_than is not None:  # finish times were written with this queue's clock
            before = (time.time() if now is None else now) - older_than.total_seconds()
        driver = await self.connect()
        return await driver.job_purge(PurgeParams(queue, wanted, before), now=now)

    async def delete(self, job_ids: Sequence[str]) -> list[ChangeResult]:
        """Delete finished (completed, failed or cancelled) jobs; a waiting or running job is
        left alone and reported ``WRONG_STATE`` (cancel it first)."""
        ids = _job_ids(job_ids)
        driver = await self.connect()
        return await driver.job_delete_many(ids)

    async def stats(
        self, *, minutes: int = 60, queues: Sequence[str] | None = None
    ) -> list[QueueStats]:
        """Per-minute counts of attempts that completed, will be retried, or failed for good,
        over the last ``minutes`` (at most ``STATS_KEEP_MINUTES``), for ``queues`` (None:
        all), sorted by queue then minute. Minutes without any are left out. Workers write
        their counts every few seconds, so the current minute is a little behind."""
        if isinstance(minutes, bool) or not 1 <= minutes <= STATS_KEEP_MINUTES:
            raise InvalidArgument(
                f"minutes must be from 1 to {STATS_KEEP_MINUTES}, got {minutes!r}"
            )
        if isinstance(queues, str):
            raise InvalidArgument(f"queues must be a list of names: pass [{queues!r}]")
        now = self.clock.now()
        current = int((time.time() if now is None else now) // 60)
        driver = await self.connect()
        return await driver.stats_read(
            None if queues is None else list(queues), since_minute=current - minutes + 1
        )

    async def queues(self) -> list[QueueInfo]:
        driver = await self.connect()
        return await driver.queue_list()

    async def pause(self, queue: str) -> None:
        driver = await self.connect()
        await driver.queue_pause(check_queue_name(queue))

    async def resume(self, queue: str) -> None:
        driver = await self.connect()
        await driver.queue_resume(check_queue_name(queue))

    async def workers(self) -> list[WorkerInfo]:
        driver = await self.connect()
        return await driver.worker_list(now=self.clock.now())

    async def schedules(self) -> list[CronInfo]:
        """The cron and interval schedules workers declared, with their latest tick."""
        return await (await self.connect()).cron_list()


def _states(states: Sequence[JobState | str]) -> tuple[JobState, ...]:
    try:
        return tuple(JobState(s) for s in states)
    except ValueError as exc:
        known = ", ".join(s.value for s in JobState)
        raise InvalidArgument(f"{exc}; job states are: {known}") from None


def _job_ids(job_ids: Sequence[str]) -> list[str]:
    # A str is a Sequence[str] too: retry("abc") would act on jobs "a", "b" and "c".
    if isinstance(job_ids, str | bytes):
        raise TypeError(
            f"job_ids must be a list of job ids, not a {type(job_ids).__name__}: "
            f"pass [{job_ids!r}] for one job"
        )
    return list(job_ids)
