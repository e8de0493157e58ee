"""Telling a worker at once that a job it runs was cancelled (``Capability.CANCEL_NOTIFY``).

``job_cancel_many`` learns from its script which worker runs each active job it asked to stop,
then pushes the job's id onto that worker's list (``{prefix}:cancels:<worker id>``, kept a few
minutes after the last push, so the lists of workers that died vanish). The worker blocks on
its list in ``cancel_listen``, on a connection of its own (not the one its fetches block on).
A push that fails is only logged: the worker still learns of the cancel when it next renews
its leases.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Final

from redis.asyncio.cluster import RedisCluster

from conveyor.backends.redis import _commands as commands
from conveyor.backends.redis._resp import BlockingConnection
from conveyor.backends.redis._store import Store
from conveyor.backends.redis._wakeups import MIN_BLOCK, longest_block

log = logging.getLogger("conveyor.redis")

MOST_PER_CALL: Final = 1000  # ids one cancel_listen returns at most (the rest: the next call)


class CancelNotices:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._blocking: BlockingConnection | None = None  # made on first use

    def close(self) -> None:
        if self._blocking is not None:
            self._blocking.close()
            self._blocking = None

    async def push(self, cancels: Sequence[tuple[str, str]]) -> None:
        """Tell each worker of (worker id, job id) pairs that the job was cancelled."""
        try:
            await commands.push_cancels(self._store.client, self._store.ns, cancels)
        except Exception as exc:  # renewals deliver the cancel within one renewal interval
            log.warning(
                "telling workers of %d cancelled job(s) failed (their lease renewals will): %s",
                len(cancels),
                exc,
            )

    async def listen(self, worker_id: str, timeout: float) -> list[str]:
        """Ids of jobs cancelled since the last call, waiting up to ``timeout`` seconds (kept
        below the reply timeout) for one."""
        client = self._store.client
        key = self._store.ns.cancels(worker_id)
        wait = min(timeout, longest_block(client))
        if wait < MIN_BLOCK:
            wait = 0.0
        blocking = None
        if not isinstance(client, RedisCluster) and wait > 0:
            if self._blocking is None:
                self._blocking = client.blocking()
            blocking = self._blocking
        return await commands.pop_cancels(client, blocking, key, wait, most=MOST_PER_CALL)
