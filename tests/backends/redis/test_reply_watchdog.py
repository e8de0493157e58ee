"""The shared connection's reply watchdog: commands that wait while no data comes for the reply
timeout give the connection up (a silent partition must not hang its callers), while replies
that keep coming, and a command sent after a quiet spell, are waited for."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest

from conveyor.backends.redis._resp import ConnectionLost, Endpoint, _open, pack
from tests.servers.redis_server import RedisServer

# Redis ends a blocking pop's wait on its own clock tick (10 a second by default), up to
# ~0.1 s late: the margins below leave room for that.
TIMEOUT = 1.0


@pytest.fixture(scope="module")
def server_port() -> Iterator[int]:
    with RedisServer() as server:
        yield int(server.url.rsplit(":", 1)[1].split("/")[0])


def endpoint(host: str, port: int) -> Endpoint:
    return Endpoint(host, port, reply_timeout=TIMEOUT, client_name=None)


async def test_a_server_that_never_answers_is_given_up_after_the_reply_timeout(
    silent_server: tuple[str, int],
) -> None:
    protocol = await _open(endpoint(*silent_server))
    started = time.monotonic()
    (reply,) = protocol.send(pack("PING"), 1)
    with pytest.raises(ConnectionLost, match=rf"no reply from .* within {TIMEOUT:g}s"):
        await reply
    assert TIMEOUT - 0.05 < time.monotonic() - started < 5
    assert not protocol.usable


async def test_replies_that_keep_coming_keep_the_connection(server_port: int) -> None:
    """Three blocking pops in one write, each answered ~0.5 s after the one before: 1.5 s in
    all, longer than the timeout, but data comes well within it each time."""
    protocol = await _open(endpoint("127.0.0.1", server_port))
    try:
        key = f"watchdog-{uuid.uuid4().hex}"
        pop = pack("BLPOP", key, "0.5")
        started = time.monotonic()
        replies = await asyncio.gather(*protocol.send(pop * 3, 3))
        assert replies == [None, None, None]
        assert time.monotonic() - started > 1.4 * TIMEOUT
        assert protocol.usable
    finally:
        protocol.close()


async def test_a_command_sent_after_a_quiet_spell_gets_the_whole_timeout(
    server_port: int,
) -> None:
    """The timer armed by the first command is still pending when the second is sent: the
    second's wait is counted from its own send, and a timer that fires while nothing waits
    gives nothing up."""
    protocol = await _open(endpoint("127.0.0.1", server_port))
    try:
        (first,) = protocol.send(pack("PING"), 1)
        assert await first in (b"PONG", "PONG")
        await asyncio.sleep(0.6 * TIMEOUT)  # the scenario: a quiet spell shorter than it
        key = f"watchdog-{uuid.uuid4().hex}"
        (pop,) = protocol.send(pack("BLPOP", key, "0.5"), 1)  # ends after the first's timer
        assert await pop is None
        await asyncio.sleep(TIMEOUT * 1.5)  # idle across a timer's firing
        (last,) = protocol.send(pack("PING"), 1)
        assert await last in (b"PONG", "PONG")
        assert protocol.usable
    finally:
        protocol.close()
