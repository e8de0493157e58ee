"""A lean asyncio Redis client: RESP2 over one multiplexed connection, parsed by hiredis.

Why not redis-py's asyncio client: on this project's 2-core reference machine it spends about
175 µs of CPU per command (connection pool, retry wrapper, observability hooks, response
callbacks), against about 30 µs for a bare protocol; a job queue makes one to three commands
per job, so that overhead would be most of a job's cost. redis-py is still used for Redis
Cluster, where it does the slot routing.

Many coroutines share one connection: commands are written as they come and replies matched
in order (Redis answers in order), so concurrent callers pipeline without asking to. Blocking
commands get a connection of their own (:meth:`Client.blocking`). A command that meets a
dropped connection or a restarting server is retried on a new connection with a short
exponential backoff. Every command Conveyor sends is safe to repeat: a repeat changes nothing
the first one did not (a fetch replays its receipt, finishes are fenced by lease token, inserts
deduplicated by id), though it may report the first one's work as already done (a duplicate,
a lost lease).
"""

from __future__ import annotations

import asyncio
import collections
import random
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar, cast

import hiredis

T = TypeVar("T")

# How long a lost server is waited for, in total, before a command fails: long enough to ride
# through a restart of a server with a small data set.
RETRY_DELAYS: Final = (0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0)


class RespError(Exception):
    """Base of this client's errors."""


class ConnectionLost(RespError, ConnectionError):
    """The connection failed or closed before the reply arrived (an ``OSError``: the engine
    reports it as the backend being unavailable)."""


class ReplyError(RespError):
    """The server answered with an error."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.code = message.split(" ", 1)[0]


class NoScript(ReplyError):
    """``EVALSHA`` of a script the server does not know."""


class ServerUnavailable(ReplyError):
    """An error that says the server cannot serve now or refuses us: loading, out of memory,
    read-only replica, no permission, wrong password."""


_UNAVAILABLE: Final = frozenset(
    {"LOADING", "OOM", "READONLY", "NOPERM", "WRONGPASS", "NOAUTH", "MASTERDOWN", "BUSY"}
)
# Worth another try on a new connection: a server loading its data, a replica that was the
# primary before a failover (a new connection may reach the new primary), a busy script.
_RETRYABLE: Final = frozenset({"LOADING", "MASTERDOWN", "BUSY", "READONLY"})


def reply_error(error: hiredis.ReplyError) -> ReplyError:
    message = str(error)
    code = message.split(" ", 1)[0]
    if code == "NOSCRIPT":
        return NoScript(message)
    if code in _UNAVAILABLE:
        return ServerUnavailable(message)
    return ReplyError(message)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how to connect."""

    host: str | None = "127.0.0.1"
    port: int = 6379
    unix_path: str | None = None
    username: str | None = None
    password: str | None = None
    db: int = 0
    ssl_context: ssl.SSLContext | None = None
    server_hostname: str | None = None
    connect_timeout: float = 10.0
    reply_timeout: float | None = 30.0
    client_name: str | None = "conveyor"

    def describe(self) -> str:
        return self.unix_path or f"{self.host}:{self.port}"


class _Protocol(asyncio.Protocol):
    """One connection: replies are handed to waiting futures in the order commands were sent."""

    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint
        self._reader = hiredis.Reader()
        self._waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._transport: asyncio.Transport | None = None
        self._closed: Exception | None = None
        # One timer at a time, looked at when it fires, rather than one made and cancelled per
        # round trip (that was ~3 % of a single enqueue's CPU).
        self._watchdog: asyncio.TimerHandle | None = None
        self._progress_at = 0.0  # loop time the oldest command was sent or the last data came
        self._loop = asyncio.get_running_loop()

    # -- asyncio callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiting = self._waiting
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                self._fail(
                    ConnectionLost(f"protocol error from {self._endpoint.describe()}: {exc}")
                )
                return
            if reply is False:
                break
            if not waiting:  # nobody asked: the stream is out of step, trust nothing on it
                self._fail(ConnectionLost("unexpected reply from the server"))
                return
            future = waiting.popleft()
            if future.done():  # its caller gave up (cancelled); the reply is dropped
                continue
            if isinstance(reply, hiredis.ReplyError):
                future.set_exception(reply_error(reply))
            else:
                future.set_result(reply)
        self._progress_at = self._loop.time()

    def connection_lost(self, exc: Exception | None) -> None:
        where = self._endpoint.describe()
        self._fail(ConnectionLost(f"connection to {where} lost" + (f": {exc}" if exc else "")))

    # -- use -----------------------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        return self._closed is None and self._transport is not None

    def send(self, packed: bytes, count: int) -> list[asyncio.Future[Any]]:
        """Write ``count`` packed commands; their reply futures, in order. The caller must
        await (or gather) every one of them, so that no failure goes unretrieved."""
        if self._closed is not None or self._transport is None:
            raise ConnectionLost(str(self._closed or "not connected"))
        try:
            self._transport.write(packed)
        except Exception as exc:  # a transport that fails on write: nobody waits for replies
            self._fail(ConnectionLost(f"writing to {self._endpoint.describe()} failed: {exc}"))
            raise ConnectionLost(str(self._closed)) from exc
        futures = [self._loop.create_future() for _ in range(count)]
        if not self._waiting:  # the connection's wait for a reply starts now
            self._progress_at = self._loop.time()
            if self._watchdog is None:
                self._arm_watchdog()
        self._waiting.extend(futures)
        return futures

    def close(self) -> None:
        self._fail(ConnectionLost("connection closed"))

    def _fail(self, error: Exception) -> None:
        if self._closed is None:
            self._closed = error
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(error)
        if self._transport is not None:
            self._transport.abort()

    def _arm_watchdog(self) -> None:
        # A reply that never comes (a silent network partition) must not hang its caller: if
        # commands wait and no data has come for the reply timeout, the connection is given up.
        timeout = self._endpoint.reply_timeout
        if timeout is not None:
            self._watchdog = self._loop.call_at(self._progress_at + timeout, self._look)

    def _look(self) -> None:
        """The watchdog's timer fired: give up if commands still wait and nothing came for the
        reply timeout, else look again when it would run out (never while nothing waits)."""
        self._watchdog = None
        timeout = self._endpoint.reply_timeout
        if timeout is None or not self._waiting or self._closed is not None:
            return
        # (A timer may fire up to a millisecond early: that is not a reason to look again.)
        if self._loop.time() - self._progress_at >= timeout - 0.001:
            where = self._endpoint.describe()
            self._fail(ConnectionLost(f"no reply from {where} within {timeout:g}s"))
        else:
            self._arm_watchdog()


def pack(*args: Any) -> bytes:
    return hiredis.pack_command(args)  # type: ignore[no-any-return]


async def _open(endpoint: Endpoint) -> _Protocol:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(endpoint.connect_timeout):
            if endpoint.unix_path is not None:
                _, protocol = await loop.create_unix_connection(
                    lambda: _Protocol(endpoint), endpoint.unix_path
                )
            else:
                _, protocol = await loop.create_connection(
                    lambda: _Protocol(endpoint),
                    endpoint.host or "127.0.0.1",
                    endpoint.port,
                    ssl=endpoint.ssl_context,
                    server_hostname=endpoint.server_hostname if endpoint.ssl_context else None,
                )
    except TimeoutError:
        raise ConnectionLost(
            f"cannot connect to {endpoint.describe()} within {endpoint.connect_timeout:g}s"
        ) from None
    except ssl.SSLError as exc:
        raise ConnectionLost(f"TLS with {endpoint.describe()} failed: {exc}") from exc
    except OSError as exc:
        raise ConnectionLost(f"cannot connect to {endpoint.describe()}: {exc}") from exc
    setup = setup_commands(endpoint)
    if setup:
        replies = await asyncio.gather(
            *protocol.send(b"".join(setup), len(setup)), return_exceptions=True
        )
        for reply in replies:
            if isinstance(reply, ReplyError) and not is_setname_refusal(reply):
                protocol.close()
                raise ServerUnavailable(f"{endpoint.describe()} refused the connection: {reply}")
    return protocol


def setup_commands(endpoint: Endpoint) -> list[bytes]:
    """What a new connection sends first: its credentials, database and name."""
    setup: list[bytes] = []
    if endpoint.password is not None:
        if endpoint.username:
            setup.append(pack("AUTH", endpoint.username, endpoint.password))
        else:
            setup.append(pack("AUTH", endpoint.password))
    if endpoint.db:
        setup.append(pack("SELECT", endpoint.db))
    if endpoint.client_name:
        setup.append(pack("CLIENT", "SETNAME", endpoint.client_name))
    return setup


def is_setname_refusal(error: ReplyError) -> bool:
    # A user restricted by ACL may not run CLIENT SETNAME; the name is only a courtesy.
    return error.code == "NOPERM" and "client" in str(error).lower()


class Pipeline:
    """Commands sent together in one write; replies in order (errors raised as the first one)."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._commands: list[tuple[Any, ...]] = []

    def execute_command(self, *args: Any) -> Pipeline:
        self._commands.append(args)
        return self

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        """The replies in order; with ``raise_on_error=False``, an error reply is returned in
        its command's place (as redis-py does) instead of raised."""
        if not self._commands:
            return []
        return await self._client.execute_many(self._commands, raise_on_error=raise_on_error)


class Client:
    """A connection to one Redis server, shared by every coroutine of one event loop."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None
        self._closed = False

    async def _connection(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and protocol.usable:
            return protocol
        if self._closed:
            raise ConnectionLost("client closed")
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._protocol is None or not self._protocol.usable:
                self._protocol = await _open(self.endpoint)
            return self._protocol

    async def execute_command(self, *args: Any) -> Any:
        packed = pack(*args)

        async def attempt() -> Any:
            (future,) = (await self._connection()).send(packed, 1)
            return await future

        return await _with_retries(attempt, worth_retrying, self._drop_if_demoted)

    async def execute_many(
        self, commands: Sequence[tuple[Any, ...]], *, raise_on_error: bool = True
    ) -> list[Any]:
        """Send ``commands`` in one write; their replies. The first error is raised, unless
        ``raise_on_error`` is false: then error replies come back in their commands' places
        (a lost connection is still raised: every command is sent again)."""
        packed = b"".join(pack(*args) for args in commands)

        async def attempt() -> list[Any]:
            futures = (await self._connection()).send(packed, len(commands))
            replies = await asyncio.gather(*futures, return_exceptions=True)
            for reply in replies:
                if isinstance(reply, BaseException) and (
                    raise_on_error or not isinstance(reply, ReplyError)
                ):
                    raise reply
            return replies

        return await _with_retries(attempt, worth_retrying, self._drop_if_demoted)

    def send_now(self, *args: Any) -> asyncio.Future[Any] | None:
        """Write one command before returning, on the connection as it is: its reply's future,
        or None when there is no usable connection to write on (nothing was sent). No retries:
        a caller that meets a lost connection sends the command again the usual way. A
        failure is marked retrieved: a caller cancelled before it awaited the future (a task
        cancelled before its first step) must not leave asyncio reporting it."""
        protocol = self._protocol
        if protocol is None or not protocol.usable:
            return None
        try:
            (future,) = protocol.send(pack(*args), 1)
        except ConnectionLost:
            return None
        future.add_done_callback(_retrieve_one)
        return future

    def _drop_if_demoted(self, error: BaseException) -> None:
        # A primary turned replica by a failover answers READONLY on a connection that still
        # works: only a new connection can reach the new primary.
        if isinstance(error, ServerUnavailable) and error.code == "READONLY" and self._protocol:
            self._protocol.close()
            self._protocol = None

    def pipeline(self, transaction: bool = False) -> Pipeline:
        return Pipeline(self)

    def blocking(self) -> BlockingConnection:
        """A connection of its own for a blocking command (it would stall the shared one)."""
        return BlockingConnection(self.endpoint)

    async def aclose(self) -> None:
        self._closed = True
        if self._protocol is not None:
            self._protocol.close()
            self._protocol = None


def worth_retrying(error: BaseException) -> bool:
    if isinstance(error, ConnectionLost):
        return True
    return isinstance(error, ServerUnavailable) and error.code in _RETRYABLE


async def _with_retries(
    attempt: Callable[[], Awaitable[T]],
    retryable: Callable[[BaseException], bool],
    before_retry: Callable[[BaseException], None] | None = None,
) -> T:
    """``attempt()``, tried again after a short, growing, jittered pause while it fails with
    an error ``retryable`` accepts, up to the last of :data:`RETRY_DELAYS`."""
    for delay in RETRY_DELAYS:
        try:
            return await attempt()
        except Exception as exc:
            if not retryable(exc):
                raise
            if before_retry is not None:
                before_retry(exc)
        await asyncio.sleep(delay * (0.5 + random.random()))
    return await attempt()


class BlockingConnection:
    """A dedicated connection for ``BLPOP`` and the like; reconnects when needed."""

    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint
        self._protocol: _Protocol | None = None

    async def execute(self, *commands: tuple[Any, ...]) -> list[Any]:
        """Send ``commands`` together (the first one may block); their replies."""
        packed = b"".join(pack(*args) for args in commands)

        async def attempt() -> list[Any]:
            if self._protocol is None or not self._protocol.usable:
                self._protocol = await _open(self._endpoint)
            futures = self._protocol.send(packed, len(commands))
            try:
                # Replies are settled in order, and a dropped connection fails every future
                # still waiting: once the last one is settled, all are. Waiting on it alone
                # (not gathering them all) resumes this call one pass of the event loop
                # sooner, between a worker's wake-up and the start of the job it fetched.
                await futures[-1]
            except asyncio.CancelledError:
                # The blocked command's reply would arrive later and out of step.
                self.close()
                _retrieve(futures)
                raise
            except Exception:
                pass  # raised below, with the first failure of the batch
            return [future.result() for future in _retrieve(futures)]

        return await _with_retries(attempt, lambda exc: isinstance(exc, ConnectionLost))

    def close(self) -> None:
        if self._protocol is not None:
            self._protocol.close()
            self._protocol = None


def _retrieve(futures: list[asyncio.Future[Any]]) -> list[asyncio.Future[Any]]:
    """``futures``, every failure among them retrieved (asyncio reports those that are not)."""
    for future in futures:
        if future.done() and not future.cancelled():
            future.exception()
    return futures


def _retrieve_one(future: asyncio.Future[Any]) -> None:
    _retrieve([future])
