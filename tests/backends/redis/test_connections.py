"""Reaching Redis: URLs, lazy connections, unix sockets, TLS, ACL users, setup warnings."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import redis

from conveyor import BackendUnavailable, JobContext, Queue, UnsupportedURL, Worker, job
from conveyor.backends.redis import RedisDriver
from conveyor.backends.redis._connection import parse_url, redact
from conveyor.backends.registry import configured_url
from tests.conformance.worker.helpers import Num, fast_config, wait_state
from tests.conftest import redis_test_url
from tests.servers.redis_server import RedisServer, make_tls_files

square = job("redis.square", Num, result=int, queue="emails")


async def handle_square(payload: Num, ctx: JobContext) -> int:
    return payload.n**2


async def run_one_job(url: str) -> int:
    """Enqueue a job and run it with a real worker on ``url``; its result."""
    async with Queue.from_url(url) as queue:
        worker = Worker(queue, config=fast_config())
        worker.register(square, handle_square)
        task = asyncio.create_task(worker.run())
        try:
            handle = await queue.enqueue(square, Num(n=7))
            return await handle.result(timeout=10)
        finally:
            worker.stop(grace=0)
            await asyncio.wait_for(task, 10)


# -- URLs ------------------------------------------------------------------------------------


def test_url_forms_and_options() -> None:
    plain = parse_url("redis://localhost:6380/2?prefix=app&socket_timeout=5")
    assert (plain.cluster, plain.prefix) == (False, "app")
    assert plain.client_url == "redis://localhost:6380/2?socket_timeout=5"
    tls = parse_url("rediss://h/0?ssl_cert_reqs=required&ssl_ca_certs=/ca.pem")
    assert tls.client_url.startswith("rediss://h/0?") and "ssl_ca_certs=%2Fca.pem" in tls.client_url
    assert parse_url("valkeys://h").client_url.startswith("rediss://")
    cluster = parse_url("redis+cluster://node-1:7000")
    assert cluster.cluster and cluster.client_url == "redis://node-1:7000"
    assert parse_url("unix:///run/redis.sock?db=1").client_url == "unix:///run/redis.sock?db=1"
    assert parse_url("redis://h").prefix == "conveyor"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis://h/0?prefix={bad}", "invalid prefix"),
        ("redis://h/0?prefix=", "invalid prefix"),
        ("redis:///0", "no host"),
        ("memcache://h", "unsupported"),
    ],
)
def test_bad_urls_are_refused_with_the_reason(url: str, problem: str) -> None:
    with pytest.raises(UnsupportedURL, match=problem):
        parse_url(url)


def test_passwords_never_appear_in_messages() -> None:
    url = "redis://worker:s3cret@h:6379/0"
    assert redact(url) == "redis://worker:***@h:6379/0"
    assert RedisDriver(url).url == "redis://worker:***@h:6379/0"
    with pytest.raises(UnsupportedURL) as refused:
        parse_url("redis://worker:s3cret@h/0?prefix={x}")
    assert "s3cret" not in str(refused.value)


def test_redis_url_is_used_when_conveyor_url_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/3")
    assert configured_url() == "redis://cache:6379/3"
    monkeypatch.setenv("CONVEYOR_URL", "sqlite:///jobs.db")
    assert configured_url() == "sqlite:///jobs.db"
    assert configured_url("redis://explicit/0") == "redis://explicit/0"
    assert Queue.from_url("redis://explicit/0").url == "redis://explicit/0"


async def test_a_queue_connects_only_when_first_used_and_says_where_it_failed() -> None:
    # Port 1 on loopback: nothing listens there. Building the queue must not try to connect.
    queue = Queue.from_url("redis://user:pw@127.0.0.1:1/0?socket_connect_timeout=0.2")
    with pytest.raises(BackendUnavailable) as failed:
        await queue.enqueue(square, Num(n=1))
    message = str(failed.value)
    assert "job_insert_many" in message and "127.0.0.1:1" in message
    assert "pw" not in message.replace("job_insert_many", "")
    await queue.close()


# -- unix sockets, TLS, ACL users: each on a server of its own --------------------------------


@pytest.fixture
def socket_server() -> Iterator[RedisServer]:
    with RedisServer(unix_socket=True) as server:
        yield server


async def test_unix_socket_url(socket_server: RedisServer) -> None:
    url = f"unix://{socket_server.unix_path}?db=0&prefix=sock"
    assert await run_one_job(url) == 49


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[RedisServer, Path]]:
    files = make_tls_files(tmp_path / "tls")
    with RedisServer(tls=files) as server:
        yield server, files.ca_cert


async def test_rediss_verifies_the_certificate(tls_server: tuple[RedisServer, Path]) -> None:
    server, ca = tls_server
    assert server.url.startswith("rediss://")
    assert await run_one_job(f"{server.url}?ssl_ca_certs={ca}&prefix=tls") == 49

    # Certificates are checked by default: without the CA the connection is refused...
    queue = Queue.from_url(f"{server.url}?prefix=tls&socket_connect_timeout=2")
    with pytest.raises(BackendUnavailable, match="certificate verify failed"):
        await queue.enqueue(square, Num(n=1))
    await queue.close()
    # ...unless the URL explicitly turns the check off (redis-py's own query option).
    assert await run_one_job(f"{server.url}?ssl_cert_reqs=none&prefix=tls-unchecked") == 49


async def test_an_acl_user_limited_to_the_queue_keys_runs_a_worker(
    restricted_url: Callable[[Sequence[str]], str], caplog: pytest.LogCaptureFixture
) -> None:
    url = restricted_url(["{acl}:*", "{acl:emails}:*"])
    caplog.set_level(logging.DEBUG, logger="conveyor")
    assert await run_one_job(url) == 49
    # The restriction is real: the same user can touch nothing else.
    with redis.Redis.from_url(url.split("?")[0]) as limited:
        with pytest.raises(redis.exceptions.NoPermissionError):
            limited.get("{other}:key")
        with pytest.raises(redis.exceptions.NoPermissionError):
            limited.config_get("maxmemory-policy")


@pytest.fixture
def careless_server() -> Iterator[RedisServer]:
    with RedisServer(extra_args=["--maxmemory-policy", "allkeys-lru"]) as server:
        yield server


async def test_worker_warns_when_redis_may_lose_jobs(
    careless_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="conveyor.worker")
    assert await run_one_job(redis_test_url(careless_server.url)) == 49
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("maxmemory-policy 'allkeys-lru'" in w and "noeviction" in w for w in warnings)
    assert any("keeps nothing on disk" in w and "appendonly yes" in w for w in warnings)


@pytest.fixture
def durable_server() -> Iterator[RedisServer]:
    with RedisServer(appendonly=True) as server:
        yield server


async def test_a_durable_noeviction_server_draws_no_warning(
    durable_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="conveyor.worker")
    assert await run_one_job(redis_test_url(durable_server.url)) == 49
    assert not [r for r in caplog.records if getattr(r, "event", None) == "setup"]


async def test_a_finished_job_reads_back_through_a_new_queue(redis_base_url: str) -> None:
    url = redis_test_url(redis_base_url)
    assert await run_one_job(url) == 49
    async with Queue.from_url(url) as other:
        [info] = await other.list_jobs(queue="emails")
        assert info.result == 49
        assert (await wait_state(other, info.id, info.state)).name == "redis.square"


def test_the_registry_knows_exactly_the_schemes_the_backend_reads() -> None:
    # The registry keeps its own list so that it can name a scheme without importing redis-py.
    from conveyor.backends.redis._connection import _SCHEMES
    from conveyor.backends.registry import REDIS_SCHEMES

    assert set(_SCHEMES) == REDIS_SCHEMES
