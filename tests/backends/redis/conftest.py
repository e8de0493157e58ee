"""Fixtures the Redis-only tests share."""

from __future__ import annotations

import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence

import pytest
import redis

from conveyor.backends.redis import RedisDriver
from tests.conftest import redis_test_url
from tests.servers.redis_server import RedisServer


@pytest.fixture
def restricted_url() -> Iterator[Callable[[Sequence[str]], str]]:
    """A private server and a factory of URLs for an ACL user allowed only the given key
    patterns (prefix ``acl``), as a locked-down production deployment would be."""
    with RedisServer() as server:

        def url_for(keys: Sequence[str]) -> str:
            with redis.Redis.from_url(server.url) as admin:
                admin.acl_setuser(
                    "jobs",
                    enabled=True,
                    reset_keys=True,
                    passwords=["+s3cret"],
                    keys=list(keys),
                    commands=["+@all", "-@dangerous"],
                )
            return server.url.replace("redis://", "redis://jobs:s3cret@") + "?prefix=acl"

        yield url_for


@pytest.fixture(scope="module")
def raw() -> Iterator[redis.Redis]:
    """A private server for one test module, through a plain redis-py client: for tests that
    run scripts by hand and read every key they wrote (nothing else shares the server)."""
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        yield client
        client.close()


@pytest.fixture
async def redis_driver(redis_base_url: str) -> AsyncIterator[RedisDriver]:
    """An opened Redis driver under a key prefix of its own, for tests that read its keys."""
    d = RedisDriver(redis_test_url(redis_base_url))
    await d.open()
    try:
        yield d
    finally:
        await d.close()


@pytest.fixture
def silent_server() -> Iterator[tuple[str, int]]:
    """A listener that accepts connections and never answers (a stalled server)."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[:2]
    finally:
        stop.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        listener.close()
