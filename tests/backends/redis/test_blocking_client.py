"""The blocking Redis client ``SyncQueue`` writes enqueues with, from its callers' threads: a
server that stops answering is given up after the reply timeout, and a dropped connection is
dialled again by the retry that follows the first attempt."""

from __future__ import annotations

import asyncio
import gc
import socket
import sys
import time

import pytest
import redis

from conveyor.backends.redis._blocking import BlockingClient, drive
from conveyor.backends.redis._resp import Client, ConnectionLost, Endpoint, NoScript, pack
from tests.servers.redis_server import RedisServer


def test_a_server_that_never_answers_is_given_up_after_the_reply_timeout(
    silent_server: tuple[str, int],
) -> None:
    host, port = silent_server
    client = BlockingClient(Endpoint(host, port, reply_timeout=0.3, client_name=None))
    started = time.monotonic()
    with pytest.raises(ConnectionLost, match=r"no reply from .* within 0.3s"):
        client._round_trip(pack("PING"), 1)  # one attempt, no retries
    assert 0.25 < time.monotonic() - started < 5
    assert client._socket is None  # a late reply must not be read as the next command's


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kernel timeouts: Linux only")
def test_a_plain_socket_waits_with_kernel_timeouts_not_python_polls() -> None:
    with RedisServer() as server:
        port = port_of(server)
        client = BlockingClient(Endpoint("127.0.0.1", port, reply_timeout=2.5))
        try:
            assert drive(client.execute_command("PING")) in (b"PONG", "PONG")
            sock = client._socket
            assert sock is not None and sock.gettimeout() is None  # blocking: no poll() first
            limit = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16)
            assert limit != bytes(16)  # the kernel bounds the wait instead
        finally:
            drive(client.aclose())


def test_a_dropped_connection_is_dialled_again_by_the_retry() -> None:
    with RedisServer() as server:
        port = port_of(server)
        client = BlockingClient(Endpoint("127.0.0.1", port, client_name="blocking-retry"))
        try:
            drive(client.execute_command("SET", "k", "1"))
            with redis.Redis.from_url(server.url) as admin:
                assert admin.client_kill_filter(_type=None, skipme=True) >= 1
            # The first attempt meets the closed connection; the retry dials a new one.
            assert drive(client.execute_command("GET", "k")) == b"1"
        finally:
            drive(client.aclose())


# -- the asyncio connection an idle worker blocks on -------------------------------------------


async def test_a_cancelled_blocking_wait_drops_its_connection_and_leaves_nothing_unretrieved() -> (
    None
):
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    with RedisServer() as server:
        connection = Client(Endpoint("127.0.0.1", port_of(server))).blocking()
        try:
            wait = asyncio.create_task(connection.execute(("BLPOP", "nothing-here", 10), ("PING",)))
            await asyncio.sleep(0.2)  # blocked on the server by now
            wait.cancel()
            with pytest.raises(asyncio.CancelledError):
                await wait
            gc.collect()
            await asyncio.sleep(0)
            assert reported == []  # the PING's failure was retrieved
            # A new connection serves the next call: the cancelled one's reply never arrives.
            assert await connection.execute(("PING",)) in ([b"PONG"], ["PONG"])
        finally:
            connection.close()


async def test_an_error_behind_a_blocking_command_is_raised_in_its_place() -> None:
    with RedisServer() as server:
        connection = Client(Endpoint("127.0.0.1", port_of(server))).blocking()
        try:
            with pytest.raises(NoScript):
                await connection.execute(("BLPOP", "nothing-here", 0.01), ("EVALSHA", "0" * 40, 0))
            assert await connection.execute(("RPUSH", "k", "v"), ("LPOP", "k")) == [1, b"v"]
        finally:
            connection.close()


def port_of(server: RedisServer) -> int:
    return int(server.url.rsplit(":", 1)[1].split("/")[0])
