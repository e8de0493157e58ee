"""A Redis restart under a waiting worker: the worker carries on, and nothing is left for
asyncio to report ("Future exception was never retrieved ... ConnectionLost" used to be logged
on every restart, for the fetch sent behind the blocking pop)."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from typing import Any

from conveyor.backends.redis import RedisDriver
from conveyor.drivers.records import FetchParams, NewJob
from tests.conftest import redis_test_url
from tests.servers.redis_server import RedisServer


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.01)


def blocked_clients(server: RedisServer) -> int:
    with server.client() as client:
        return int(client.info("clients")["blocked_clients"])


async def test_a_restart_under_a_waiting_fetch_leaves_no_failure_unretrieved() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        with RedisServer() as server:
            driver = RedisDriver(redis_test_url(server.url))
            await driver.open()
            try:
                params = FetchParams(("default",), 5, "w", 30.0)
                waiting = asyncio.create_task(driver.job_fetch(params, wait=25.0))
                await wait_until(lambda: blocked_clients(server) == 1)
                server.restart()  # the blocking pop and the fetch behind it both lose their reply
                await wait_until(lambda: blocked_clients(server) == 1)  # waiting again
                await driver.job_insert_many([NewJob("a", "default", "t", b"{}")])
                [job] = await asyncio.wait_for(waiting, 10)
                assert job.id == "a"
            finally:
                await driver.close()
        gc.collect()  # a future's unretrieved failure is reported when it is collected
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    assert [c["message"] for c in reported] == []
