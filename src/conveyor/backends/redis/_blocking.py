"""The lean Redis client of :mod:`._resp` over a blocking socket, for a caller's own thread.

``SyncQueue`` writes from the thread that calls it: a :class:`BlockingClient` runs the asyncio
client's code (its coroutines never suspend) and :func:`drive` runs them to their end without
an event loop, one blocking round trip per call and no hop to a loop's thread.
"""

from __future__ import annotations

import os
import random
import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import Coroutine, Sequence
from typing import Any, Final, TypeVar

import hiredis

from conveyor.backends.redis._resp import (
    RETRY_DELAYS,
    Client,
    ConnectionLost,
    Endpoint,
    ReplyError,
    RespError,
    ServerUnavailable,
    is_setname_refusal,
    pack,
    reply_error,
    setup_commands,
    worth_retrying,
)

T = TypeVar("T")


class BlockingClient(Client):
    """The same client over a blocking socket, for a caller's own thread (``SyncQueue``).

    Its coroutines never suspend: each does its I/O before returning, so code written for
    :class:`Client` runs unchanged when a thread drives it with :func:`drive` instead of an
    event loop, at the cost of one blocking round trip and no hop to a loop's thread. The same
    retries as the asyncio client (a dropped connection, a loading server), slept in the
    caller's thread. One command at a time: a lock orders the threads that share it.
    """

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint)
        self._socket: socket.socket | None = None
        self._reader = hiredis.Reader()
        self._lock = threading.Lock()
        self._pid = os.getpid()

    async def execute_command(self, *args: Any) -> Any:
        (reply,) = self._with_retries(pack(*args), 1, raise_on_error=True)
        return reply

    async def execute_many(
        self, commands: Sequence[tuple[Any, ...]], *, raise_on_error: bool = True
    ) -> list[Any]:
        packed = b"".join(pack(*args) for args in commands)
        return self._with_retries(packed, len(commands), raise_on_error=raise_on_error)

    def _with_retries(self, packed: bytes, count: int, *, raise_on_error: bool) -> list[Any]:
        # The first attempt without the retry loop's set-up: it is the one nearly every call
        # makes, and a lone enqueue costs little more than its round trip.
        try:
            return self._attempt(packed, count, raise_on_error)
        except RespError as exc:
            if not worth_retrying(exc):
                raise
            self._before_retry(exc)
        for delay in RETRY_DELAYS:
            time.sleep(delay * (0.5 + random.random()))
            try:
                return self._attempt(packed, count, raise_on_error)
            except RespError as exc:
                if delay == RETRY_DELAYS[-1] or not worth_retrying(exc):
                    raise
                self._before_retry(exc)
        raise AssertionError("unreachable")

    def _attempt(self, packed: bytes, count: int, raise_on_error: bool) -> list[Any]:
        with self._lock:
            replies = self._round_trip(packed, count)
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, ReplyError):
                    raise reply
        return replies

    def _before_retry(self, error: RespError) -> None:
        if isinstance(error, ServerUnavailable) and error.code == "READONLY":
            self.close()  # a demoted primary: only a new connection finds the new one

    def _round_trip(self, packed: bytes, count: int) -> list[Any]:
        if self._closed:
            raise ConnectionLost("client closed")
        if self._pid != os.getpid():
            # A forked child (a preloading web server's worker) shares the parent's socket: a
            # command from both would interleave on it. The child drops it unclosed and dials
            # its own (closing it here would not disturb the parent, but nothing needs it).
            self._socket, self._pid = None, os.getpid()
        sock = self._socket if self._socket is not None else self._connect()
        reader = self._reader
        replies: list[Any] = []
        try:
            sock.sendall(packed)
            while len(replies) < count:
                reply = reader.gets()
                if reply is False:
                    data = sock.recv(65536)
                    if not data:
                        raise ConnectionLost(f"connection to {self.endpoint.describe()} lost")
                    reader.feed(data)
                elif isinstance(reply, hiredis.ReplyError):
                    replies.append(reply_error(reply))
                else:
                    replies.append(reply)
        except ConnectionLost:
            self.close()
            raise
        except BlockingIOError as exc:
            # The kernel's send or receive timeout (see _bound_waits) ran out. The reply may
            # still come, out of step with the next command: the connection is given up.
            self.close()
            where, timeout = self.endpoint.describe(), self.endpoint.reply_timeout
            raise ConnectionLost(f"no reply from {where} within {timeout:g}s") from exc
        except (OSError, hiredis.ProtocolError) as exc:
            # A timeout too: the reply may still come, out of step with the next command.
            self.close()
            raise ConnectionLost(f"connection to {self.endpoint.describe()} lost: {exc}") from exc
        return replies

    def _connect(self) -> socket.socket:
        endpoint = self.endpoint
        try:
            if endpoint.unix_path is not None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(endpoint.connect_timeout)
                sock.connect(endpoint.unix_path)
            else:
                host = endpoint.host or "127.0.0.1"
                sock = socket.create_connection((host, endpoint.port), endpoint.connect_timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if endpoint.ssl_context is not None:
                    sock = endpoint.ssl_context.wrap_socket(
                        sock, server_hostname=endpoint.server_hostname
                    )
        except (OSError, ssl.SSLError) as exc:
            raise ConnectionLost(f"cannot connect to {endpoint.describe()}: {exc}") from exc
        _bound_waits(sock, endpoint.reply_timeout)
        self._socket, self._reader = sock, hiredis.Reader()
        setup = setup_commands(endpoint)
        if setup:
            for reply in self._round_trip(b"".join(setup), len(setup)):
                if isinstance(reply, ReplyError) and not is_setname_refusal(reply):
                    self.close()
                    raise ServerUnavailable(
                        f"{endpoint.describe()} refused the connection: {reply}"
                    )
        return sock

    def close(self) -> None:
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.close()

    async def aclose(self) -> None:
        self._closed = True
        self.close()


# Kernel timeouts on a blocking socket, where the platform takes them as a struct timeval.
_KERNEL_TIMEOUTS: Final = sys.platform.startswith("linux")


def _bound_waits(sock: socket.socket, timeout: float | None) -> None:
    """Bound every send and receive on ``sock`` by ``timeout``. On Linux, a plain socket gets
    the kernel's own timeouts (``SO_RCVTIMEO``, ``SO_SNDTIMEO``) and stays blocking: Python's
    socket timeout would first poll() before each send and each receive, two more system calls
    per round trip. A run-out kernel timeout raises ``BlockingIOError``. A TLS socket keeps
    Python's timeout (its reads and writes are not single system calls)."""
    if timeout is None or not _KERNEL_TIMEOUTS or isinstance(sock, ssl.SSLSocket):
        sock.settimeout(timeout)
        return
    sock.settimeout(None)
    seconds = int(timeout)
    limit = struct.pack("@ll", seconds, int((timeout - seconds) * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, limit)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, limit)


def drive(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to its end in this thread, without an event loop: it must never
    suspend (it awaits only :class:`BlockingClient`'s calls and other such coroutines)."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coroutine.close()
    raise RuntimeError("a blocking Redis call waited for an event loop")
