"""A lease keeper for unit tests of the runner: remembers what it holds and what it was told
to release, and renews nothing."""

from __future__ import annotations

import contextlib
from collections.abc import Generator


class RecordingKeeper:
    def __init__(self) -> None:
        self.held: dict[str, str] = {}
        self.released: list[tuple[str, str | None]] = []

    def hold(self, job_id: str, token: str, queue: str | None = None) -> None:
        self.held[job_id] = token

    def release(self, job_id: str, token: str | None = None) -> None:
        self.released.append((job_id, token))
        if token is None or self.held.get(job_id) == token:
            self.held.pop(job_id, None)

    @contextlib.contextmanager
    def batch(self) -> Generator[None]:
        yield

    async def start(self) -> None:
        pass

    def stop(self) -> None:
        pass
