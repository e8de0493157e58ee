"""The fetch's early path (lua/includes/fetch_early.lua) against the general code.

``job_fetch`` answers a worker's usual lease before it defines its helpers; the general code
below handles every call. Each case runs the same calls through the script and through the
script without that path, each on an empty database after the same set-up, and requires the
same replies and the same stored keys, hash fields in the same order (tests/backends/redis/
compare.py). Each case also says whether the early path answers its first call: run alone,
it must answer it, or leave it to the general code having written nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import redis

from conveyor.backends.redis import _lua, _stubs
from conveyor.backends.redis._keys import QueueKeys
from conveyor.backends.redis._script_keys import SCRIPT_KEYS
from tests.backends.redis import compare
from tests.backends.redis.compare import Call, Setup

T0 = 1_700_000_000.0
NOW = T0 + 10
SEQ = 9_000_000_000_000_000  # above the server clock in µs: seq = this + 1, + 2, ...
KEYS = QueueKeys("c", "q")
SCRIPT = _lua.load("job_fetch")
EARLY = "fetch_early.lua"
GENERAL = compare.without(SCRIPT, EARLY)
EARLY_ONLY = compare.only(SCRIPT, EARLY)
QUEUE_KEYS = KEYS.named("job_fetch", SCRIPT_KEYS["job_fetch"][0][:-2])
INSERT = _lua.load("job_insert_many")
INSERT_KEYS = _stubs.script_keys_of(KEYS, INSERT)


def fetch(
    limit: Any = 1,
    *,
    receipt: str = "r1",
    previous: str | None = None,
    forget: str | None = None,
    now: Any = NOW,
    lease: Any = 30.0,
    base: str | None = None,
    mode: str = "lease",
    budget: Any = 100,
    ttl: Any = 60_000,
    rate: tuple[Any, Any] = ("", ""),
    extra: tuple[Any, ...] = (),
) -> Call:
    """A job_fetch call as the driver sends it (the receipt is the token base)."""
    keys = (*QUEUE_KEYS, KEYS.receipt(receipt), KEYS.receipt(previous or receipt))
    if forget is None:
        forget = "1" if previous else ""
    token_base = receipt if base is None else base
    return keys, [now, limit, lease, "w1", token_base, mode, budget, ttl, forget, *rate, *extra]


def insert(
    client: redis.Redis,
    job_id: str,
    *,
    priority: int = 0,
    run_at: str = "",
    group: str = "",
    limits: str = "",
    now: float = T0,
) -> None:
    args = [now, 1, job_id, "n", b'{"x":1}', priority, 25, run_at, 0.0, "", "", group, limits, ""]
    assert client.eval(INSERT.source, len(INSERT_KEYS), *INSERT_KEYS, *args)


def jobs(*ids: str) -> Setup:
    def setup(client: redis.Redis) -> None:
        for i, job_id in enumerate(ids):
            insert(client, job_id, now=T0 + i)
        client.delete(KEYS.wake)  # the marker the inserts left, taken by the worker

    return setup


def then(*steps: Setup) -> Setup:
    def setup(client: redis.Redis) -> None:
        for step in steps:
            step(client)

    return setup


def retrying(job_id: str, at: float) -> Setup:
    """A job waiting to be retried at ``at``, stored as job_finish_many leaves it."""

    def setup(client: redis.Redis) -> None:
        seq = SEQ + 100 + len(job_id)
        member = f"{seq:016d}{job_id}"
        client.hset(
            KEYS.jobs + job_id,
            mapping={"n": "n", "d": "{}", "s": "retrying", "a": "1", "m": "25", "r": str(at),
                     "e": str(T0), "q": str(seq), "err": "boom"},
        )  # fmt: skip
        client.zadd(KEYS.retrying, {member: at})
        client.zadd(KEYS.retrying_by_seq, {job_id: seq})

    return setup


def hset(job_id: str, **fields: str) -> Setup:
    return lambda client: client.hset(KEYS.jobs + job_id, mapping=fields)


def nothing(client: redis.Redis) -> None:
    pass


# name: (calls, set-up, whether the early path answers the first call)
CASES: dict[str, tuple[list[Call], Setup, bool]] = {
    "empty queue": ([fetch()], nothing, True),
    "empty queue, limit 10": ([fetch(10)], nothing, True),
    "paused queue": ([fetch()], then(jobs("a"), lambda c: c.hset(KEYS.meta, "paused", "1")), True),
    "paused flag other than '1'": (
        [fetch()],
        then(jobs("a"), lambda c: c.hset(KEYS.meta, "paused", "0")),
        True,
    ),
    "one job": ([fetch()], jobs("a"), True),
    "one job of several: the next worker is woken": ([fetch()], jobs("a", "b", "c"), True),
    "one job of two: one left, the next worker is woken": ([fetch()], jobs("a", "b"), True),
    "one job of several, a worker already woken": (
        [fetch()],
        then(jobs("a", "b"), lambda c: c.rpush(KEYS.wake, "1")),
        True,
    ),
    "several jobs": ([fetch(3)], jobs("a", "b", "c", "d"), True),
    "every job, the limit above them": ([fetch(5)], jobs("a", "b", "c"), True),
    "500 jobs": ([fetch(500)], jobs(*(f"j{i:03d}" for i in range(501))), True),
    "a job retried before, cancel asked and isolated": (
        [fetch(2)],
        then(jobs("a", "b"), hset("a", a="2", c="1", i="1"), hset("b", a="x")),
        True,
    ),
    "a job with headers, a group key and other fields": (
        [fetch()],
        then(jobs("a"), hset("a", hd='{"h":1}', g="k", gl="1,0,0", pg="0.5", zz="?")),
        True,
    ),
    "entries naming no queued job are dropped": (
        [fetch(4)],
        then(
            jobs("a", "b", "c", "d", "e"),
            lambda c: c.delete(KEYS.jobs + "a"),
            hset("b", s="completed"),
            lambda c: c.delete(KEYS.jobs + "c") and c.set(KEYS.jobs + "c", "x"),
            lambda c: c.hdel(KEYS.jobs + "d", "q"),
        ),
        True,
    ),
    "only dropped entries": (
        [fetch(1)],
        then(jobs("a", "b"), lambda c: c.delete(KEYS.jobs + "a")),
        True,
    ),
    "a job scheduled later: next_due": (
        [fetch()],
        then(jobs("a"), lambda c: insert(c, "s", run_at=str(NOW + 50))),
        True,
    ),
    "a job retried later, another scheduled later still": (
        [fetch()],
        then(jobs("a"), retrying("r", NOW + 5), lambda c: insert(c, "s", run_at=str(NOW + 50))),
        True,
    ),
    "a due scheduled job": (
        [fetch()],
        then(jobs("a"), lambda c: insert(c, "s", run_at=str(NOW - 1))),
        False,
    ),
    "a scheduled job due at now exactly": (
        [fetch()],
        lambda c: insert(c, "s", run_at=str(NOW)),
        False,
    ),
    "a due retrying job": ([fetch()], retrying("r", NOW - 1), False),
    "a due job and a promote budget of 0": (
        [fetch(budget=0)],
        then(jobs("a"), retrying("r", NOW - 1)),
        False,
    ),
    "a stale ready entry": (
        [fetch(2)],
        then(jobs("a", "b", "c"), lambda c: c.hset(KEYS.dead, "a", "1")),
        False,
    ),
    "a job of priority 1 in the queued set": (
        [fetch(2)],
        then(jobs("a"), lambda c: insert(c, "p", priority=1)),
        False,
    ),
    "a job of priority -1 in the queued set": (
        [fetch()],
        then(jobs("a"), lambda c: insert(c, "p", priority=-1)),
        False,
    ),
    "grouped jobs": (
        [fetch(2), fetch(2, receipt="r2")],
        then(jobs("a"), lambda c: insert(c, "g1", group="k", limits="1,0,0")),
        False,
    ),
    "a group whose turn is later": (
        [fetch()],
        then(jobs("a"), lambda c: c.zadd(KEYS.ring, {"k": (NOW + 5) * 1_000_000})),
        True,
    ),
    "rate-limited": (
        [fetch(2, rate=(1, 60)), fetch(2, receipt="r2", rate=(1, 60))],
        jobs("a", "b", "c"),
        False,
    ),
    "a receipt retried": ([fetch(2), fetch(2)], jobs("a", "b", "c"), True),
    "a previous receipt forgotten": (
        [fetch(), fetch(receipt="r2", previous="r1"), fetch(receipt="r3", previous="r2")],
        jobs("a", "b"),
        True,
    ),
    "the previous receipt is this call's": (
        [fetch(), fetch(forget="1")],
        jobs("a", "b"),
        True,
    ),
    "a released receipt": (
        [fetch(mode="release"), fetch(), fetch(receipt="r2", previous="r1")],
        jobs("a"),
        False,
    ),
    "a released receipt, forgotten by the same call": (
        [fetch(mode="release"), fetch(forget="1")],
        jobs("a"),
        False,
    ),
    "a release of a lease": (
        [fetch(2), fetch(2, mode="release"), fetch(2, receipt="r2")],
        jobs("a", "b", "c"),
        True,
    ),
    "peek": ([fetch(2, mode="peek"), fetch(2, mode="peek", previous="r0")], jobs("a", "b"), False),
    "limit 0 and below": ([fetch(0), fetch(-1)], jobs("a"), False),
    "limit 501": ([fetch(501)], jobs("a"), False),
    "a token base whose last digit tosses the coin": (
        [fetch(1, base="abcf"), fetch(1, receipt="r2", base="abc0")],
        then(jobs("a", "b"), lambda c: insert(c, "g1", group="k", limits="0,0,0")),
        False,
    ),
    "odd but valid numbers": (
        [fetch(" 2 ", lease="0x10", ttl="1e3", budget="0", now=f"{NOW:.3f}")],
        jobs("a", "b"),
        True,
    ),
    "a lease of 0 seconds, now 0 and the most of each": (
        [
            fetch(lease=0, now=0),
            fetch(receipt="r2", lease=3153600000, now=7258118400, ttl=3153600000000, budget=100000),
        ],
        jobs("a", "b"),
        True,
    ),
    "a meta hash of the wrong type": (
        [fetch(forget="1", previous="r0")],
        lambda c: c.set(KEYS.meta, "x") and c.set(KEYS.receipt("r0"), "[]"),
        False,
    ),
    "a receipt of the wrong type": (
        [fetch(previous="r0")],
        lambda c: c.hset(KEYS.receipt("r1"), "x", "1") and c.set(KEYS.receipt("r0"), "[]"),
        False,
    ),
    "a scheduled set of the wrong type": (
        [fetch(previous="r0")],
        lambda c: c.set(KEYS.scheduled, "x") and c.set(KEYS.receipt("r0"), "[]"),
        False,
    ),
    "a ready list of the wrong type": (
        [fetch(previous="r0")],
        lambda c: c.set(KEYS.ready, "x") and c.set(KEYS.receipt("r0"), "[]"),
        True,
    ),
}

BAD: list[Call] = [
    fetch(now="nan"),
    fetch(now="-1"),
    fetch(now="7258118401"),
    fetch(now="x"),
    fetch(1.5),
    fetch("x"),
    fetch(100001),
    fetch(lease="-1"),
    fetch(lease="3153600001"),
    fetch(lease="nan"),
    fetch(base=""),
    fetch(mode="lend"),
    fetch(budget="-1"),
    fetch(budget="1.5"),
    fetch(budget="100001"),
    fetch(ttl="0"),
    fetch(ttl="1.5"),
    fetch(ttl="3153600000001"),
    fetch(forget="0"),
    fetch(rate=("0", "1")),
    fetch(rate=("1", "")),
    fetch(rate=("1", "0")),
    fetch(extra=("",)),
]
CASES["bad arguments"] = (BAD, jobs("a"), False)


def prepared(setup: Setup) -> Callable[[redis.Redis], None]:
    def prepare(client: redis.Redis) -> None:
        client.hset(KEYS.meta, "seq", str(SEQ))
        setup(client)

    return prepare


@pytest.mark.parametrize("case", list(CASES))
def test_the_early_path_writes_and_replies_as_the_general_code(raw: redis.Redis, case: str) -> None:
    calls, setup, _ = CASES[case]
    early = compare.run(raw, SCRIPT.source, calls, prepared(setup))
    general = compare.run(raw, GENERAL, calls, prepared(setup))
    assert early == general


@pytest.mark.parametrize("case", list(CASES))
def test_the_early_path_answers_its_calls_and_only_reads_for_the_others(
    raw: redis.Redis, case: str
) -> None:
    calls, setup, answers = CASES[case]
    before = compare.run(raw, "return 'general'", [], prepared(setup))
    alone = compare.run(raw, EARLY_ONLY, calls[:1], prepared(setup))
    if answers:
        assert alone[0] != [b"general"]
    else:
        assert alone == ([b"general"], before[1])


def test_every_bad_argument_is_refused(raw: redis.Redis) -> None:
    replies, _ = compare.run(raw, SCRIPT.source, BAD, prepared(jobs("a")))
    assert all(reply[0] == "error" and "conveyor job_fetch" in reply[1] for reply in replies)


def test_the_server_clock_makes_the_same_fields(raw: redis.Redis) -> None:
    calls = [fetch(now=""), fetch(receipt="r2", now="")]
    early = compare.run(raw, SCRIPT.source, calls, prepared(jobs("a", "b", "c")))
    general = compare.run(raw, GENERAL, calls, prepared(jobs("a", "b", "c")))

    def shape(found: Any) -> Any:  # times differ: the ids leased, the fields written
        replies = [[row[0] for row in reply[2]] for reply in found[0]]
        keys = [
            (key, kind, [f for f, _ in value] if kind == b"hash" else len(value or ""))
            for key, kind, value in found[1]
        ]
        return replies, keys

    assert shape(early) == shape(general)
    assert shape(early)[0] == [[b"a"], [b"b"]]


def test_the_general_code_is_what_the_comparison_runs() -> None:
    assert f"--!include {EARLY}\n" in (_lua.LUA_DIR / "job_fetch.lua").read_text()
    early = (_lua.LUA_DIR / "includes" / EARLY).read_text().rstrip("\n")
    assert early in SCRIPT.source and early in EARLY_ONLY and early not in GENERAL
    assert "K_PREVIOUS_RECEIPT = KEYS[22]" in GENERAL
    # Nothing ahead of the early path makes a closure: that is what it saves.
    assert not re.search(r"^\s*local function", EARLY_ONLY, re.MULTILINE)
