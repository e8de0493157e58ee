"""Concurrent one-job enqueues share round trips (``conveyor._coalesce``) without changing what
any caller sees, on every backend, through ``Queue`` and through ``SyncQueue`` on many threads:
each caller gets its own handle, duplicate flag and error; nothing is written twice or lost,
a connection cut in the middle of a batch included."""

from __future__ import annotations

import asyncio
import json
import math
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from pydantic import BaseModel

from conveyor import (
    BackendUnavailable,
    InsertStatus,
    InvalidArgument,
    PayloadTooLarge,
    Queue,
    SyncQueue,
    UntilStarted,
    job,
)
from conveyor._coalesce import SEND_AT
from conveyor.backends.registry import driver_for_url
from conveyor.engine import OperationEvent
from tests.backends.postgres.cut_proxy import CutProxy


class Note(BaseModel):
    text: str


note = job("coalesce.note", Note)
MODES = ["async", "sync"]


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def queue(backend_url: str) -> AsyncIterator[Queue]:
    async with Queue(driver_for_url(backend_url)) as q:
        yield q


Outcome = tuple[str, bool, InsertStatus] | BaseException
Call = tuple[Note, dict[str, Any]]


async def enqueue_all(queue: Queue, calls: list[Call], mode: str, url: str) -> list[Outcome]:
    """Every call at once: awaited together on the queue's loop, or each from a thread of its
    own through a SyncQueue (released together by a barrier)."""
    if mode == "async":

        async def one(payload: Note, options: dict[str, Any]) -> Outcome:
            try:
                h = await queue.enqueue(note, payload, **options)
            except Exception as exc:
                return exc
            return (h.id, h.duplicate, h.outcome)

        return list(await asyncio.gather(*(one(p, o) for p, o in calls)))

    def run() -> list[Outcome]:
        barrier = threading.Barrier(len(calls))
        with SyncQueue(Queue(driver_for_url(url))) as sync:
            sync.queue.driver.subscribe(count_inserts(queue))

            def one(call: Call) -> Outcome:
                barrier.wait()
                try:
                    h = sync.enqueue(note, call[0], **call[1])
                except Exception as exc:
                    return exc
                return (h.id, h.duplicate, h.outcome)

            with ThreadPoolExecutor(len(calls)) as pool:
                return list(pool.map(one, calls))

    return await asyncio.to_thread(run)


def count_inserts(queue: Queue) -> Callable[[OperationEvent], None]:
    """A subscriber counting the ``job_insert_many`` calls made (onto ``queue.inserts``)."""
    queue.inserts = 0  # type: ignore[attr-defined]

    def seen(event: OperationEvent) -> None:
        if event.operation == "job_insert_many":
            queue.inserts += 1  # type: ignore[attr-defined]

    return seen


async def stored(queue: Queue) -> dict[str, str]:
    jobs = await queue.list_jobs(limit=1000)
    assert len({j.id for j in jobs}) == len(jobs)
    return {j.id: json.loads(j.payload_json)["text"] for j in jobs}


async def test_concurrent_enqueues_with_mixed_duplicates(
    queue: Queue, mode: str, backend_url: str
) -> None:
    old = await queue.enqueue(note, Note(text="old"), job_id="old")
    calls: list[Call] = [(Note(text=f"n{i}"), {"job_id": f"n{i}"}) for i in range(20)]
    calls[5:5] = [(Note(text="twin-a"), {"job_id": "twin"})]
    calls[12:12] = [(Note(text="twin-b"), {"job_id": "twin"})]
    calls[8:8] = [(Note(text="again"), {"job_id": "old"})]
    calls += [(Note(text="keyed"), {"dedup": UntilStarted()})] * 2
    calls += [(Note(text=f"anon{i}"), {}) for i in range(5)]
    outcomes = await enqueue_all(queue, calls, mode, backend_url)

    assert not [o for o in outcomes if isinstance(o, BaseException)]
    by_text = dict(zip((p.text for p, _ in calls), outcomes, strict=False))
    results = [o for o in outcomes if not isinstance(o, BaseException)]
    for (payload, options), (job_id, _, _) in zip(calls, results, strict=True):
        if "job_id" in options:
            assert job_id == options["job_id"], payload
    twins = sorted(r[2].value for r in results if r[0] == "twin")
    assert twins == [InsertStatus.DUPLICATE.value, InsertStatus.INSERTED.value]
    assert by_text["again"] == ("old", True, InsertStatus.DUPLICATE)
    keyed = [r for (p, _), r in zip(calls, results, strict=True) if p.text == "keyed"]
    assert keyed[0][0] == keyed[1][0]
    assert sorted(r[1] for r in keyed) == [False, True]
    for i in range(20):
        assert by_text[f"n{i}"] == (f"n{i}", False, InsertStatus.INSERTED)
    # Every caller's job is stored once, with its own payload (the first twin to be written
    # keeps its payload; a duplicate changes nothing).
    jobs = await stored(queue)
    assert jobs[old.id] == "old"
    assert jobs["twin"] in {"twin-a", "twin-b"}
    assert len(jobs) == 1 + 20 + 1 + 1 + 5
    for i in range(5):
        anon = by_text[f"anon{i}"]
        assert not isinstance(anon, BaseException)
        assert jobs[anon[0]] == f"anon{i}"


async def test_a_bad_payload_fails_only_its_caller(
    queue: Queue, mode: str, backend_url: str
) -> None:
    queue.max_payload_bytes = 200
    # Written before the others: a driver that sends batches from the calling task can do so
    # once the queue is known to it (the first write of a queue makes it known).
    await queue.enqueue(note, Note(text="warm"), job_id="warm")
    calls: list[Call] = [(Note(text=f"good{i}"), {}) for i in range(12)]
    calls[3:3] = [(Note(text="x" * 500), {})]  # over the payload limit
    calls[6:6] = [(Note(text="bad-id"), {"job_id": "bad\x00id"})]
    calls[9:9] = [(Note(text="bad-priority"), {"priority": 10**12})]
    if mode == "sync":
        # The portal's queue is its own; it takes the same limit.
        def limited(url: str = backend_url) -> Queue:
            return Queue(driver_for_url(url), max_payload_bytes=200)

        outcomes = await _sync_with(limited, calls)
    else:
        outcomes = await enqueue_all(queue, calls, mode, backend_url)
    bad = {"x" * 500, "bad-id", "bad-priority"}
    for (payload, _), outcome in zip(calls, outcomes, strict=True):
        if payload.text in bad:
            assert isinstance(outcome, (InvalidArgument, PayloadTooLarge)), payload.text
        else:
            assert not isinstance(outcome, BaseException), outcome
    jobs = await stored(queue)
    assert sorted(jobs.values()) == sorted(["warm", *(f"good{i}" for i in range(12))])


async def _sync_with(make: Callable[[], Queue], calls: list[Call]) -> list[Outcome]:
    def run() -> list[Outcome]:
        barrier = threading.Barrier(len(calls))
        with SyncQueue(make()) as sync:

            def one(call: Call) -> Outcome:
                barrier.wait()
                try:
                    h = sync.enqueue(note, call[0], **call[1])
                except Exception as exc:
                    return exc
                return (h.id, h.duplicate, h.outcome)

            with ThreadPoolExecutor(len(calls)) as pool:
                return list(pool.map(one, calls))

    return await asyncio.to_thread(run)


async def test_concurrent_enqueues_share_round_trips(
    queue: Queue, mode: str, backend_url: str, backend_name: str
) -> None:
    await queue.enqueue(note, Note(text="warm"), job_id="warm")  # the queue is known
    queue.driver.subscribe(count_inserts(queue))
    calls: list[Call] = [(Note(text=f"n{i}"), {}) for i in range(100)]
    hold: sqlite3.Connection | None = None
    if backend_name == "sqlite":
        # Another connection holds the file's write lock for a moment: the first write waits
        # for it while every other caller (threads too) piles up behind it, so the count below
        # does not hang on how fast threads start.
        hold = sqlite3.connect(
            backend_url.removeprefix("sqlite:///"), isolation_level=None, check_same_thread=False
        )
        hold.execute("BEGIN IMMEDIATE")
        threading.Timer(0.5, hold.execute, ("COMMIT",)).start()
    try:
        outcomes = await enqueue_all(queue, calls, mode, backend_url)
    finally:
        if hold is not None:
            hold.close()
    assert all(not isinstance(o, BaseException) and not o[1] for o in outcomes)
    assert len(set(await stored(queue))) == 101
    inserts: int = queue.inserts  # type: ignore[attr-defined]
    if backend_name == "memory":
        # Its insert never waits, so every call is done before the next one starts.
        assert inserts == 100
    elif mode == "async" and queue.driver.starts_inserts:
        # The first call alone; then a batch sent each time SEND_AT calls wait, while the
        # others are still being made (one write at a time would make 2 in all).
        assert 2 < inserts <= 1 + math.ceil(99 / SEND_AT), inserts
    elif mode == "async" or backend_name == "sqlite":
        # The first call alone, the others behind it (in at most 256 a write).
        assert inserts <= 3, inserts
    else:
        # Threads start as the scheduler lets them: some batching, however loaded the host.
        assert inserts < 100, inserts
    # A lone call is written at once, on its own.
    before = inserts
    await queue.enqueue(note, Note(text="lone"))
    if mode == "async":
        assert queue.inserts == before + 1  # type: ignore[attr-defined]


class _RefusingProxy(CutProxy):  # type: ignore[misc]
    """The cut proxy that, once it has cut, can also refuse every new connection: the server
    looks gone for good."""

    refuse_after_cut = False

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        if self.refuse_after_cut and self.cuts:
            cw.transport.abort()
            return
        await super()._handle(cr, cw)


CUT: Call = (Note(text="cut-me"), {"job_id": "cut-me"})


def _through(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit(":", 1)[0] + f":{port}"
    return urlunsplit(parts._replace(netloc=netloc))


async def _cut_batch(
    backend_url: str,
    backend_name: str,
    mode: str,
    *,
    refuse_after_cut: bool,
) -> tuple[list[Call], list[Outcome], _RefusingProxy]:
    parts = urlsplit(backend_url)
    proxy = await _RefusingProxy(parts.hostname, parts.port, b"cut-me").start()
    proxy.refuse_after_cut = refuse_after_cut
    url = _through(backend_url, proxy.listen_port)
    async with Queue(driver_for_url(url)) as q:
        await q.enqueue(note, Note(text="warm"), job_id="warm")  # connected, scripts loaded
        calls: list[Call] = [(Note(text=f"b{i}"), {"job_id": f"b{i}"}) for i in range(30)]
        calls[17] = CUT
        proxy.armed = True
        outcomes = await enqueue_all(q, calls, mode, url)
    proxy.server.close()
    return calls, outcomes, proxy


# A connection to cut between client and server: one socket on Redis, a pool on PostgreSQL
# (the memory store is in-process, SQLite a file; the cluster's variant is the next test).
CUTTABLE = pytest.mark.parametrize("backend_name", ["redis", "postgres"])


@CUTTABLE
async def test_a_connection_dropped_mid_batch_loses_and_doubles_nothing(
    queue: Queue, mode: str, backend_url: str, backend_name: str
) -> None:
    calls, outcomes, proxy = await _cut_batch(
        backend_url, backend_name, mode, refuse_after_cut=False
    )
    assert proxy.cuts == 1
    # The driver sent the batch again on a new connection; the jobs the cut write had stored
    # come back as duplicates of themselves, never as a second copy.
    for (payload, options), outcome in zip(calls, outcomes, strict=True):
        assert not isinstance(outcome, BaseException), outcome
        assert outcome[0] == options["job_id"], payload
    jobs = await stored(queue)
    assert jobs == {"warm": "warm", **{o["job_id"]: p.text for p, o in calls}}


@CUTTABLE
async def test_a_batch_whose_server_stays_away_fails_each_caller_and_claims_nothing(
    queue: Queue, mode: str, backend_url: str, backend_name: str
) -> None:
    calls, outcomes, proxy = await _cut_batch(
        backend_url, backend_name, mode, refuse_after_cut=True
    )
    assert proxy.cuts == 1
    jobs = await stored(queue)
    failed = 0
    for (payload, options), outcome in zip(calls, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            # The cut write may have been stored before its reply was lost: the caller cannot
            # know, as with one job alone; what it must never see is a success for a lost job.
            assert isinstance(outcome, BackendUnavailable), outcome
            failed += 1
        else:
            assert jobs[outcome[0]] == payload.text
            assert outcome[0] == options["job_id"]
    if backend_name == "redis":  # one connection; the PostgreSQL pool has others, uncut
        assert failed >= 1
        assert isinstance(outcomes[calls.index(CUT)], BackendUnavailable)
    assert set(jobs) <= {"warm", *(o["job_id"] for _, o in calls)}


@pytest.mark.parametrize("backend_name", ["redis-cluster"])
async def test_clients_killed_under_a_batch_on_a_cluster_lose_and_double_nothing(
    queue: Queue, mode: str, backend_url: str, backend_name: str
) -> None:
    """A cluster's connections are redis-py's, to every node: instead of a proxy, writes are
    paused on every primary while the batch is sent, and the clients waiting on them are
    killed (``CLIENT KILL``, on the servers this suite started), so the batch meets dropped
    connections before any node ran it."""
    import redis

    parts = urlsplit(backend_url)
    seed = redis.Redis(host=parts.hostname or "127.0.0.1", port=parts.port or 6379)
    ports = {
        int(line.split()[1].split(":")[1].split("@")[0])
        for line in seed.execute_command("CLUSTER", "NODES").decode().splitlines()
        if "master" in line
    }
    primaries = [redis.Redis(host=parts.hostname or "127.0.0.1", port=p) for p in ports]
    await queue.enqueue(note, Note(text="warm"), job_id="warm")
    calls: list[Call] = [(Note(text=f"k{i}"), {"job_id": f"k{i}"}) for i in range(30)]

    async def kill_when_blocked() -> int:
        killed = 0
        for _ in range(200):  # until a client of this test waits on a paused node
            await asyncio.sleep(0.01)
            blocked = [p for p in primaries if p.info("clients").get("blocked_clients", 0)]
            if blocked:
                await asyncio.sleep(0.05)  # the rest of the batch too
                for p in primaries:
                    killed += int(
                        p.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
                    )
                break
        for p in primaries:
            p.execute_command("CLIENT", "UNPAUSE")
        return killed

    for p in primaries:
        p.execute_command("CLIENT", "PAUSE", 5000, "WRITE")
    try:
        outcomes, killed = await asyncio.gather(
            enqueue_all(queue, calls, mode, backend_url), kill_when_blocked()
        )
    finally:
        for p in primaries:
            p.execute_command("CLIENT", "UNPAUSE")
            p.close()
        seed.close()
    assert killed >= 1
    for (payload, options), outcome in zip(calls, outcomes, strict=True):
        assert not isinstance(outcome, BaseException), outcome
        assert outcome[0] == options["job_id"], payload
    jobs = await stored(queue)
    assert jobs == {"warm": "warm", **{o["job_id"]: p.text for p, o in calls}}


# The backends whose SyncQueue writes from the caller's thread, on a connection of its own.
@pytest.mark.parametrize("backend_name", ["sqlite", "redis"])
def test_a_forked_child_enqueues_on_its_own_connection(backend_url: str, backend_name: str) -> None:
    """A preloading web server forks workers after the parent enqueued: the child must not
    write on the parent's blocking connection (their commands would interleave on it)."""
    import multiprocessing

    with SyncQueue(Queue(driver_for_url(backend_url))) as sync:
        sync.enqueue(note, Note(text="parent"), job_id="parent")

        def child() -> None:
            handle = sync.enqueue(note, Note(text="child"), job_id="child")
            os._exit(0 if not handle.duplicate else 3)

        process = multiprocessing.get_context("fork").Process(target=child)
        process.start()
        process.join(30)
        assert process.exitcode == 0
        again = sync.enqueue(note, Note(text="parent-again"), job_id="parent-again")
        assert not again.duplicate
        assert {j.id for j in sync.list_jobs()} == {"parent", "child", "parent-again"}
