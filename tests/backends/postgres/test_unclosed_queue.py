"""A program that ends without closing its PostgreSQL queue still ends.

``asyncio.run`` cancels every task left when its coroutine returns and waits for them all. The
connection pool's maintenance tasks retry instead of stopping when that cancellation arrives in
the middle of a connect, so a queue left open while its pool was connecting used to hang the
program's exit for good (seen as a README snippet that hung now and then). Here a proxy in
front of the real server forwards the first connection (the one that opens the queue) and
leaves every later one unanswered, so the pool is always connecting when the program ends."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.conftest import drop_test_schema, postgres_test_url

SCRIPT = textwrap.dedent(
    """
    import asyncio, socket, sys, threading
    from urllib.parse import urlsplit

    from conveyor import Queue

    url = sys.argv[1]
    server = urlsplit(url)
    listener = socket.create_server(("127.0.0.1", 0))
    held = []

    def pipe(source, sink):
        while data := source.recv(65536):
            sink.sendall(data)

    def proxy():
        first = True
        while True:
            client, _ = listener.accept()
            if not first:
                held.append(client)  # accepted, never answered: a connect in flight
                continue
            first = False
            upstream = socket.create_connection((server.hostname, server.port))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=pipe, args=(a, b), daemon=True).start()

    threading.Thread(target=proxy, daemon=True).start()
    port = listener.getsockname()[1]
    user = server.netloc.rpartition("@")[0]
    queue = Queue.from_url(url.replace(server.netloc, f"{user}@127.0.0.1:{port}"))

    async def main() -> None:
        await queue.connect()  # its pool now connects in the background, through the proxy
        await asyncio.sleep(0.3)
        assert held, "the pool has not tried to connect yet"

    asyncio.run(main())  # returns without closing the queue
    print("ended")
    """
)


@pytest.fixture
def schema_url(postgres_base_url: str) -> Iterator[str]:
    url = postgres_test_url(postgres_base_url)
    yield url
    drop_test_schema(url)


def test_a_program_that_never_closed_its_queue_still_exits(schema_url: str) -> None:
    assert "@" in urlsplit(schema_url).netloc, "the proxy rewrites user@host:port"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, schema_url],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ended"
