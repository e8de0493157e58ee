"""Connecting to Redis or Valkey: URLs, clients, and the checks a worker makes at start.

URLs: ``redis://[user:password@]host[:port][/db]``, ``rediss://`` (TLS, certificates checked by
default), ``unix:///path/to/socket[?db=0]``, and ``redis+cluster://host:port`` (or
``rediss+cluster://``) for Redis Cluster, where the host is any node. ``valkey`` works wherever
``redis`` does. Query options: ``prefix`` (default ``conveyor``) names the key namespace, so every
key of queue ``q`` carries the hash tag ``{<prefix>:q}``; ``socket_timeout`` and
``socket_connect_timeout`` (seconds); ``ssl_cert_reqs`` (``required``, ``optional`` or
``none``), ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile`` and ``ssl_check_hostname`` for
TLS; ``db`` for unix sockets; ``client_name``.

A standalone server is reached with Conveyor's own lean client (:mod:`._resp`); a cluster with
redis-py's cluster client, which routes each command to the node of its slot. Either connects
lazily, on its first command, and reconnects by itself after a dropped connection or a server
restart.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from typing import Any, Final, cast
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ClusterError as _ClusterError
from redis.exceptions import (
    ConnectionError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    TimeoutError,
)

from conveyor._errors import UnsupportedURL
from conveyor.backends.redis import _resp
from conveyor.backends.redis._blocking import BlockingClient

Client = _resp.Client | RedisCluster

DEFAULT_PREFIX: Final = "conveyor"
# A command's reply must arrive within this many seconds, or the connection is treated as dead
# (a silent network partition would otherwise hang a lease renewal forever). Blocking waits are
# kept well below it.
DEFAULT_SOCKET_TIMEOUT: Final = 30.0
DEFAULT_CONNECT_TIMEOUT: Final = 10.0
RETRIES: Final = 6  # with the backoff below: about 3 s of a server being away before an error
_OPTIONS: Final = frozenset(
    {
        "prefix",
        "db",
        "socket_timeout",
        "socket_connect_timeout",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_check_hostname",
        "client_name",
    }
)

# What "the backend failed" looks like; the engine reports these as BackendUnavailable.
INFRASTRUCTURE_ERRORS: Final[tuple[type[Exception], ...]] = (
    ConnectionError,
    TimeoutError,
    _ClusterError,
    RedisClusterException,
    NoPermissionError,
    ReadOnlyError,
    OutOfMemoryError,
    OSError,  # includes the lean client's ConnectionLost
    _resp.ServerUnavailable,
)

_CHECK_ERRORS: Final[tuple[type[Exception], ...]] = (
    ResponseError,
    _resp.ReplyError,
    *INFRASTRUCTURE_ERRORS,
)

_SCHEMES: Final = {
    "redis": ("redis", False),
    "rediss": ("rediss", False),
    "unix": ("unix", False),
    "valkey": ("redis", False),
    "valkeys": ("rediss", False),
    "redis+cluster": ("redis", True),
    "rediss+cluster": ("rediss", True),
    "valkey+cluster": ("redis", True),
    "valkeys+cluster": ("rediss", True),
}
_PREFIX: Final = re.compile(r"^[A-Za-z0-9_.:-]{1,64}\Z")


@dataclass(frozen=True, slots=True)
class Target:
    """Where to connect, parsed from a Conveyor URL."""

    client_url: str  # what redis-py receives: its own scheme and options only
    cluster: bool
    prefix: str
    display: str  # the URL with its password hidden, for messages and logs
    options: tuple[tuple[str, str], ...]  # query options passed to redis-py


def parse_url(url: str) -> Target:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise UnsupportedURL(f"unsupported Redis URL {redact(url)!r}")
    client_scheme, cluster = _SCHEMES[scheme]
    if cluster and client_scheme == "unix":  # pragma: no cover - no such scheme in the table
        raise UnsupportedURL("Redis Cluster cannot be reached over a unix socket")
    options = parse_qsl(parts.query, keep_blank_values=True)
    prefix = DEFAULT_PREFIX
    passed: list[tuple[str, str]] = []
    for key, value in options:
        if key not in _OPTIONS:
            known = ", ".join(sorted(_OPTIONS))
            raise UnsupportedURL(
                f"unknown option {key!r} in Redis URL {redact(url)!r}; known options: {known}"
            )
        if key == "prefix":
            prefix = value
        else:
            passed.append((key, value))
    if not _PREFIX.match(prefix):
        raise UnsupportedURL(
            f"invalid prefix {prefix!r} in {redact(url)!r}: 1-64 letters, digits, '_', '.', ':' "
            "or '-' (no braces: the prefix is part of every key's hash tag)"
        )
    if client_scheme != "unix" and not parts.hostname:
        raise UnsupportedURL(f"no host in Redis URL {redact(url)!r}")
    query = urlencode(passed)
    # Built by hand: urlunsplit would drop the "//" of unix:///path (empty host).
    client_url = f"{client_scheme}://{parts.netloc}{parts.path}" + (f"?{query}" if query else "")
    return Target(client_url, cluster, prefix, redact(url), tuple(passed))


def redact(url: str) -> str:
    """``url`` with any password (user info or a ``password=`` option) replaced by ``***``."""
    url = re.sub(r"(?i)([?&]password=)[^&#]*", r"\1***", url)
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{user}:***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def make_client(target: Target) -> Client:
    """A client for ``target``; it does no I/O until its first command."""
    options = dict(target.options)
    if target.cluster:
        return _cluster_client(target, options)
    return _resp.Client(endpoint(target.client_url, options))


def make_blocking_client(target: Target) -> BlockingClient | None:
    """A blocking client for ``target`` (no I/O yet), or None for a cluster: its slot routing
    is redis-py's asyncio client's alone."""
    if target.cluster:
        return None
    return BlockingClient(endpoint(target.client_url, dict(target.options)))


def endpoint(client_url: str, options: dict[str, str]) -> _resp.Endpoint:
    parts = urlsplit(client_url)
    tls = parts.scheme == "rediss"
    unix_path = parts.path if parts.scheme == "unix" else None
    db_text = options.get("db") or ("" if unix_path else parts.path.lstrip("/")) or "0"
    try:
        db = int(db_text)
        reply_timeout = float(options.get("socket_timeout", DEFAULT_SOCKET_TIMEOUT))
        connect_timeout = float(options.get("socket_connect_timeout", DEFAULT_CONNECT_TIMEOUT))
    except ValueError as exc:
        raise UnsupportedURL(f"invalid number in Redis URL {redact(client_url)!r}: {exc}") from None
    return _resp.Endpoint(
        host=None if unix_path else (parts.hostname or "127.0.0.1"),
        port=parts.port or 6379,
        unix_path=unix_path,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        db=db,
        ssl_context=_ssl_context(options) if tls else None,
        server_hostname=parts.hostname,
        connect_timeout=connect_timeout,
        reply_timeout=reply_timeout,
        client_name=options.get("client_name", "conveyor"),
    )


def _ssl_context(options: dict[str, str]) -> ssl.SSLContext:
    """Certificates are verified unless the URL says ``ssl_cert_reqs=none``."""
    context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
    requirement = options.get("ssl_cert_reqs", "required").lower()
    modes = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}
    if requirement not in modes:
        raise UnsupportedURL(f"ssl_cert_reqs must be required, optional or none: {requirement!r}")
    check_hostname = options.get("ssl_check_hostname", "true").lower() not in ("false", "0", "no")
    context.check_hostname = check_hostname and requirement != "none"
    context.verify_mode = modes[requirement]
    if "ssl_certfile" in options:
        context.load_cert_chain(options["ssl_certfile"], options.get("ssl_keyfile"))
    return context


def _cluster_client(target: Target, options: dict[str, str]) -> RedisCluster:
    kwargs: dict[str, Any] = {
        "decode_responses": False,
        "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), RETRIES),
        "socket_keepalive": True,
        "socket_timeout": DEFAULT_SOCKET_TIMEOUT,
        "socket_connect_timeout": DEFAULT_CONNECT_TIMEOUT,
    }
    url = target.client_url.split("?", 1)[0]
    passed = {k: v for k, v in options.items() if k != "db"}
    return RedisCluster.from_url(url + ("?" + urlencode(passed) if passed else ""), **kwargs)


def socket_timeout(client: Client) -> float | None:
    """The reply timeout the client's connections use (blocking waits stay below it)."""
    if isinstance(client, RedisCluster):
        value = client.get_connection_kwargs().get("socket_timeout")
        return None if value is None else float(value)
    return client.endpoint.reply_timeout


async def setup_warnings(client: Client, display: str) -> list[str]:
    """What about the server's configuration puts jobs at risk, in words a user can act on.

    A server that refuses CONFIG or INFO (managed services, restricted ACL users) is not
    checked: the check must never keep a worker from starting.
    """
    warnings: list[str] = []
    try:
        policy = await _config(client, "maxmemory-policy")
        save = await _config(client, "save")
        appendonly = await _config(client, "appendonly")
    except _CHECK_ERRORS:
        return warnings
    if policy is not None and policy != "noeviction":
        warnings.append(
            f"{display} has maxmemory-policy {policy!r}: when memory runs out Redis deletes keys, "
            "and jobs with them; set maxmemory-policy noeviction"
        )
    if save == "" and appendonly == "no":
        warnings.append(
            f"{display} keeps nothing on disk (no RDB snapshots, appendonly no): every queued "
            "job is lost if Redis restarts; enable appendonly yes"
        )
    return warnings


async def _config(client: Client, name: str) -> str | None:
    reply: Any = await client.execute_command("CONFIG", "GET", name)
    pairs: list[tuple[Any, Any]]
    if hasattr(reply, "items"):  # redis-py's cluster client: a dict, maybe one per node
        values: list[Any] = list(reply.values())
        parsed: Any = values[0] if values and hasattr(values[0], "items") else reply
        pairs = list(parsed.items())
    else:
        flat = cast(list[Any], reply)
        pairs = [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]
    for key, value in pairs:
        text_key = key.decode() if isinstance(key, bytes) else str(key)
        if text_key == name:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None
