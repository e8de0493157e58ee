"""House-keeping on a schedule: expired login sessions are deleted by the worker's timetable."""

from __future__ import annotations

from pydantic import BaseModel

from conveyor import job


class CleanExpiredSessions(BaseModel):
    batch_size: int = 1000


clean_expired_sessions = job(
    "shop.sessions.clean_expired", CleanExpiredSessions, result=int, queue="maintenance"
)
