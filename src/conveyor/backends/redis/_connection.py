"""Connecting to Redis or Valkey: URLs, clients, and the checks a worker makes at start.

URLs: ``redis://[user:password@]host[:port][/db]``, ``rediss://`` (TLS, certificates checked by
default), ``unix:///path/to/socket[?db=0]``, and ``redis+cluster://host:port`` (or
``rediss+cluster://``) for Redis Cluster, where the host is any node. ``valkey`` works wherever
``redis`` does. Query options are passed to redis-py (``ssl_cert_reqs``, ``ssl_ca_certs``,
``socket_timeout`` ...), except Conveyor's own ``prefix`` (default ``conveyor``), which names
the key namespace: every key of queue ``q`` carries the hash tag ``{<prefix>:q}``.

Clients connect lazily, on their first command, and reconnect by themselves: a command that
meets a dropped connection or a restarting server is retried with a short exponential backoff
before the caller sees an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aredis
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

Client = aredis.Redis | RedisCluster

DEFAULT_PREFIX: Final = "conveyor"
# A command's reply must arrive within this many seconds, or the connection is treated as dead
# (a silent network partition would otherwise hang a lease renewal forever). Blocking waits are
# kept well below it.
DEFAULT_SOCKET_TIMEOUT: Final = 30.0
DEFAULT_CONNECT_TIMEOUT: Final = 10.0
RETRIES: Final = 6  # with the backoff below: about 3 s of a server being away before an error

# What "the backend failed" looks like; the engine reports these as BackendUnavailable.
INFRASTRUCTURE_ERRORS: Final[tuple[type[Exception], ...]] = (
    ConnectionError,
    TimeoutError,
    _ClusterError,
    RedisClusterException,
    NoPermissionError,
    ReadOnlyError,
    OutOfMemoryError,
    OSError,
)

_CHECK_ERRORS: Final[tuple[type[Exception], ...]] = (ResponseError, *INFRASTRUCTURE_ERRORS)

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
SCHEMES: Final = frozenset(_SCHEMES)
_PREFIX: Final = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


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
    """``url`` with any password replaced by ``***``."""
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
    given = {key for key, _ in target.options}
    kwargs: dict[str, Any] = {
        "decode_responses": False,
        "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), RETRIES),
    }
    if not target.client_url.startswith("unix:"):
        # Notices a peer that vanished without closing the connection (TCP only).
        kwargs["socket_keepalive"] = True
    if "socket_timeout" not in given:
        kwargs["socket_timeout"] = DEFAULT_SOCKET_TIMEOUT
    if "socket_connect_timeout" not in given:
        kwargs["socket_connect_timeout"] = DEFAULT_CONNECT_TIMEOUT
    if target.cluster:
        return RedisCluster.from_url(target.client_url, **kwargs)
    return aredis.Redis.from_url(target.client_url, **kwargs)


def socket_timeout(client: Client) -> float | None:
    """The reply timeout the client's connections use (blocking waits stay below it)."""
    if isinstance(client, RedisCluster):
        value = client.get_connection_kwargs().get("socket_timeout")
    else:
        value = client.connection_pool.connection_kwargs.get("socket_timeout")
    return None if value is None else float(value)


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
    reply: Any = await client.config_get(name)
    if isinstance(client, RedisCluster) and reply and isinstance(next(iter(reply.values())), dict):
        reply = next(iter(reply.values()))  # per-node replies: one node speaks for the cluster
    for key, value in dict(reply).items():
        text_key = key.decode() if isinstance(key, bytes) else str(key)
        if text_key == name:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None
