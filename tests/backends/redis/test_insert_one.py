"""The single-job insert's own path (lua/includes/insert_one.lua) against the general code.

``job_insert_many`` answers the usual call (one plain job) before it defines its helpers; the
general code below handles every call. Each case here runs the same calls through the script
and through the script without that path, each on an empty database, and requires the same
replies and the same stored keys, hash fields in the same order. The meta hash starts with a
sequence number above the clock's, so that both runs hand out the same sequence numbers.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis

from conveyor.backends.redis import _lua, _stubs
from conveyor.backends.redis._keys import QueueKeys
from tests.backends.redis import compare
from tests.backends.redis.compare import Setup

T0 = 1_700_000_000.0
SEQ = 9_000_000_000_000_000  # above the server clock in µs: seq = this + 1, + 2, ...
KEYS = QueueKeys("c", "q")
SCRIPT = _lua.load("job_insert_many")
SCRIPT_KEYS = _stubs.script_keys_of(KEYS, SCRIPT)
FAST = "--!include insert_one.lua\n"
# Only the single-job path has its own include: without it, the script is the general code.
GENERAL = compare.without(SCRIPT, "insert_one.lua")


def args(
    job_id: str = "a", now: str | float = T0, max_attempts: str = "25", delay: str = "0.0"
) -> list[Any]:
    return [now, 1, job_id, "n", b'{"x":1}', "0", max_attempts, "", delay, "", "", "", "", ""]


def run(client: redis.Redis, source: str, calls: list[list[Any]], setup: Setup) -> Any:
    def prepare(client: redis.Redis) -> None:
        client.hset(KEYS.meta, "seq", str(SEQ))
        setup(client)

    return compare.run(client, source, [(SCRIPT_KEYS, call) for call in calls], prepare)


def nothing(client: redis.Redis) -> None:
    pass


CASES: dict[str, tuple[list[list[Any]], Setup]] = {
    "first job": ([args()], nothing),
    "jobs in order": ([args("a"), args("b", T0 + 1), args("c", T0 + 1)], nothing),
    "a run time not in whole microseconds": ([args(now=T0 + 0.123456789)], nothing),
    "a run time before the tail's goes to the queued set": (
        [args("a", T0 + 10), args("b", T0)],
        nothing,
    ),
    "an id with a stale ready-list entry goes to the queued set": (
        [args("b"), args("a", T0 + 1)],
        lambda c: c.hset(KEYS.dead, "a", "1"),
    ),
    "a garbled tail": ([args()], lambda c: c.hset(KEYS.meta, mapping={"tr": "x", "tq": "y"})),
    "a duplicate": ([args("a"), args("a", T0 + 1)], nothing),
    "a worker already woken": ([args()], lambda c: c.rpush(KEYS.wake, "1")),
    "a key that is not a job hash": ([args("a")], lambda c: c.set(KEYS.jobs + "a", "x")),
    "max_attempts 1000, then 1, then 0": (
        [args("a", max_attempts="1000"), args("b", max_attempts="1"), args("c", max_attempts="0")],
        nothing,
    ),
    "a delay of 0": ([args(delay="0")], nothing),
    "now out of range or not a number": (
        [args(now="nan"), args(now="-1"), args(now="7258118401"), args(now="x")],
        nothing,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_single_job_path_stores_and_replies_as_the_general_code(
    raw: redis.Redis, case: str
) -> None:
    calls, setup = CASES[case]
    fast = run(raw, SCRIPT.source, calls, setup)
    general = run(raw, GENERAL, calls, setup)
    assert fast == general


def test_the_server_clock_makes_the_same_fields(raw: redis.Redis) -> None:
    fast = run(raw, SCRIPT.source, [args(now="")], nothing)
    general = run(raw, GENERAL, [args(now="")], nothing)
    assert fast[0] == general[0] == [[b"queued"]]

    def shape(found: Any) -> list[Any]:  # run times and their ready-list tail differ
        return [
            (key, kind, [f for f, _ in value] if kind == b"hash" else value)
            for key, kind, value in found[1]
        ]

    assert shape(fast) == shape(general)


def test_the_general_code_is_what_the_comparison_runs() -> None:
    assert FAST in (_lua.LUA_DIR / "job_insert_many.lua").read_text()
    assert "insert_one.lua" not in GENERAL and len(GENERAL) < len(SCRIPT.source)
