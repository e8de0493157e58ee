"""What every part of the Redis driver shares: the client, the key names, and which queues
exist (each queue lives in its own slot, so an operation that does not name its queue finds
the job among the queues known)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Final

from conveyor.backends.redis import _commands as commands
from conveyor.backends.redis._connection import Client, Target, make_client
from conveyor.backends.redis._keys import Namespace, QueueKeys

QUEUES_TTL: Final = 2.0  # seconds the list of known queues is reused for duplicate checks


class Store:
    """One driver's view of a Redis deployment; no I/O until its client's first command."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.ns = Namespace(target.prefix)
        self._client: Client | None = None
        self._keys: dict[str, QueueKeys] = {}
        self._registered: set[str] = set()
        self._queues_cache: tuple[float, list[str]] = (float("-inf"), [])

    @property
    def cluster(self) -> bool:
        return self.target.cluster

    def open(self) -> None:
        if self._client is None:
            self._client = make_client(self.target)

    def use(self, client: Client) -> None:
        """Talk through ``client`` (a :class:`~._blocking.BlockingClient`) instead of making one."""
        self._client = client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    @property
    def client(self) -> Client:
        if self._client is None:
            raise RuntimeError(f"the Redis driver for {self.target.display} is not open")
        return self._client

    @property
    def client_if_open(self) -> Client | None:
        return self._client

    def keys(self, queue: str) -> QueueKeys:
        keys = self._keys.get(queue)
        if keys is None:
            keys = self._keys[queue] = QueueKeys(self.target.prefix, queue)
        return keys

    async def known(self, *, fresh: bool = True) -> list[str]:
        """The queues that exist (recently cached when ``fresh`` is false)."""
        at, cached = self._queues_cache
        if not fresh and time.monotonic() - at < QUEUES_TTL:
            return cached
        known = await commands.known_queues(self.client, self.ns)
        self._queues_cache = (time.monotonic(), known)
        return known

    def known_now(self, queue: str) -> list[str] | None:
        """What :meth:`known` (not fresh) would return, when that needs no round trip: the
        cache is recent and ``queue`` was registered by this store; else None."""
        at, cached = self._queues_cache
        if queue not in self._registered or time.monotonic() - at >= QUEUES_TTL:
            return None
        return cached

    async def known_keys(self, queue: str | None = None) -> list[QueueKeys]:
        """The keys of ``queue``, or of every known queue when None."""
        names = [queue] if queue is not None else await self.known()
        return [self.keys(name) for name in names]

    async def register(self, queue: str) -> None:
        """Make ``queue`` known, before any job of it is written: a queue with jobs must always
        be known, or maintenance and lookups by id would never see them."""
        if queue not in self._registered:
            await commands.register_queue(self.client, self.ns, queue)
            self._registered.add(queue)
            at, known = self._queues_cache
            if queue not in known:
                self._queues_cache = (at, sorted([*known, queue]))

    async def locate(self, ids: Sequence[str]) -> dict[str, QueueKeys]:
        """The queue each of ``ids`` is in (absent when in none)."""
        queues = await self.known_keys()
        return await commands.locate(self.client, queues, list(dict.fromkeys(ids)))

    async def group(
        self, items: Sequence[tuple[str, str | None]]
    ) -> list[tuple[QueueKeys, list[int]]]:
        """Positions of (job id, queue if known) items grouped by the queue the job is in, in
        first-seen order; jobs found in no queue are left out."""
        unknown = [job_id for job_id, queue in items if queue is None]
        located = await self.locate(unknown) if unknown else {}
        groups: dict[str, list[int]] = {}
        for n, (job_id, queue) in enumerate(items):
            keys = self.keys(queue) if queue is not None else located.get(job_id)
            if keys is not None:
                groups.setdefault(keys.queue, []).append(n)
        return [(self.keys(queue), positions) for queue, positions in groups.items()]

    async def now(self, now: float | None) -> float:
        """``now``, or the server's clock when it is None."""
        return now if now is not None else await commands.server_time(self.client)
