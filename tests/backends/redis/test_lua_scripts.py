"""The Lua scripts: headers agree with the Python stubs, and scripts survive SCRIPT FLUSH."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import redis

from conveyor.backends.redis import RedisDriver
from conveyor.backends.redis._keys import QueueKeys
from conveyor.backends.redis._lua import LUA_DIR, header_keys, load, script_names
from conveyor.backends.redis._records import JOB_FIELDS
from conveyor.backends.redis._script_keys import SCRIPT_KEYS
from conveyor.drivers.records import FetchParams, NewJob
from tests.conftest import redis_test_url
from tests.servers.redis_server import RedisServer


def test_every_script_has_a_stub_and_every_stub_a_script() -> None:
    assert set(script_names()) == set(SCRIPT_KEYS)


@pytest.mark.parametrize("name", sorted(SCRIPT_KEYS))
def test_header_keys_match_the_stub(name: str) -> None:
    script = load(name)
    expected, variadic = SCRIPT_KEYS[name]
    assert script.keys == expected, f"{name}.lua declares {script.keys}, the stub sends {expected}"
    assert script.variadic_keys == variadic


@pytest.mark.parametrize("name", sorted(SCRIPT_KEYS))
def test_header_states_arguments_returns_and_guarantee(name: str) -> None:
    lines = (LUA_DIR / f"{name}.lua").read_text().splitlines()
    size = next(n for n, line in enumerate(lines) if line.strip() and not line.startswith("--"))
    header, body = "\n".join(lines[:size]), "\n".join(lines[size:])
    assert header.startswith(f"-- {name}: "), f"{name}.lua must start with its name"
    for part in ("-- Returns:", "-- Guarantees:"):
        assert part in header, f"{name}.lua has no {part!r} line"
    if "ARGV[" in body:
        assert "-- ARGV[" in header, f"{name}.lua reads ARGV without declaring it"
    if "KEYS[" in body:
        assert "-- KEYS[" in header, f"{name}.lua reads KEYS without declaring them"


# Script KEYS that are not attributes of QueueKeys: made per call, or shared by every queue.
PER_CALL_KEYS = {"receipt", "previous_receipt", "set", "by_seq", "cron"}
SHARED_KEYS = {"workers", "info", "order", "leader"}


@pytest.mark.parametrize("name", sorted(SCRIPT_KEYS))
def test_a_script_gets_only_keys_of_one_queue_or_of_the_namespace(name: str) -> None:
    keys = QueueKeys("conveyor", "mail")
    names, _ = SCRIPT_KEYS[name]
    shared = set(names) & SHARED_KEYS
    assert not shared or shared == set(names), f"{name} mixes queue and shared keys"
    for key_name in set(names) - SHARED_KEYS - PER_CALL_KEYS:
        assert getattr(keys, key_name).startswith("{conveyor:mail}:"), "one hash tag, one slot"


@pytest.mark.parametrize("name", sorted(SCRIPT_KEYS))
def test_a_script_declares_its_keys_as_its_header_names_them(name: str) -> None:
    # Each script binds KEYS to named locals (K_<NAME>) in header order; a helper it includes
    # that uses a key the script does not receive would read an undefined global at run time.
    text = (LUA_DIR / f"{name}.lua").read_text()
    declared = re.findall(r"^local K_(\w+) = KEYS\[(\d+)\]$", text, re.MULTILINE)
    header, _ = header_keys(text)
    assert [(k.lower(), int(n)) for k, n in declared] == [
        (key, n) for n, key in enumerate(header, 1)
    ]
    source = load(name).source
    used = set(re.findall(r"\bK_([A-Z_]+)\b", source))
    assert used <= {k for k, _ in declared}, f"{name}.lua uses keys it does not receive"


def test_the_scripts_bounds_are_the_python_ones() -> None:
    from conveyor import _validation
    from conveyor.drivers import common

    args = (LUA_DIR / "includes" / "args.lua").read_text()
    history = (LUA_DIR / "includes" / "history.lua").read_text()

    def constant(text: str, name: str) -> float:
        match = re.search(rf"^local {name} = (\d+)", text, re.MULTILINE)
        assert match is not None, name
        return float(match[1])

    assert constant(args, "MAX_EPOCH") == _validation.MAX_EPOCH
    assert constant(args, "MAX_SECONDS") == _validation.MAX_SECONDS
    assert constant(history, "HISTORY_LIMIT") == common.HISTORY_LIMIT
    assert constant(history, "HISTORY_ERROR_CHARS") == common.HISTORY_ERROR_CHARS


def test_job_fields_match_the_lua_list() -> None:
    source = (LUA_DIR / "includes" / "fields.lua").read_text()
    match = re.search(r"local JOB_FIELDS = \{(.*?)\}", source, re.DOTALL)
    assert match is not None
    assert tuple(re.findall(r"'([a-z]+)'", match[1])) == JOB_FIELDS


def test_header_keys_parser_rejects_gaps() -> None:
    with pytest.raises(ValueError, match="out of order"):
        header_keys("-- KEYS[1] a: x\n-- KEYS[3] c: y\n")
    assert header_keys("-- KEYS[1] a: x\n-- KEYS[2..] more: y\n") == (("a",), True)


def test_includes_are_spliced_and_no_directive_is_left() -> None:
    for name in script_names():
        assert "--!include" not in load(name).source, name


@pytest.mark.parametrize("name", sorted(SCRIPT_KEYS))
def test_no_script_includes_a_file_twice(name: str) -> None:
    # Harmless to the result, but every helper would be made twice on every call.
    includes = re.findall(r"^--!include (\S+)$", (LUA_DIR / f"{name}.lua").read_text(), re.M)
    assert len(includes) == len(set(includes)), f"{name}.lua: {includes}"


def code_of(source: str) -> str:
    """Lua source without its comments (none of the scripts has '--' inside a string)."""
    return re.sub(r"--[^\n]*", "", source)


@pytest.fixture
def private_server() -> Iterator[RedisServer]:
    # SCRIPT FLUSH affects the whole server: never on one shared with other tests.
    with RedisServer() as server:
        yield server


async def test_scripts_are_reloaded_after_script_flush(private_server: RedisServer) -> None:
    driver = RedisDriver(redis_test_url(private_server.url))
    await driver.open()
    try:
        await driver.job_insert_many([NewJob("a", "default", "t", b"{}")])
        with redis.Redis.from_url(private_server.url) as raw:
            assert raw.script_flush()
            assert raw.script_exists(load("job_fetch").sha) == [False]
        params = FetchParams(("default",), 10, "w", 30.0)
        [job] = await driver.job_fetch(params)
        assert job.id == "a"
        await driver.job_insert_many([NewJob("b", "default", "t", b"{}")])
        with redis.Redis.from_url(private_server.url) as raw:
            assert raw.script_exists(load("job_fetch").sha) == [True]
        assert [j.id for j in await driver.job_fetch(params)] == ["b"]
    finally:
        await driver.close()


@pytest.mark.parametrize("name", sorted(SCRIPT_KEYS))
def test_every_helper_a_script_calls_is_included_before_use(name: str) -> None:
    # Redis refuses globals at run time, not when loading: a missing include would only fail
    # when that line first runs.
    helpers: set[str] = set()
    for path in (LUA_DIR / "includes").glob("*.lua"):
        helpers |= set(re.findall(r"^local function (\w+)", path.read_text(), re.MULTILINE))
    source = code_of(load(name).source)
    for match in re.finditer(r"(?<![\w.:])(\w+)\(", source):
        called = match[1]
        if called in helpers:
            defined = source.find(f"local function {called}(")
            assert 0 <= defined < match.start(), f"{name}.lua calls {called}() before defining it"


@pytest.mark.parametrize("name", sorted(SCRIPT_KEYS))
def test_a_script_that_places_jobs_saves_the_ready_tail(name: str) -> None:
    # place() (also called by new_job()) appends to the ready list only after the recorded tail;
    # a script that forgot to record a new tail would let a later script append out of order.
    source = code_of(load(name).source)
    body = source[source.rfind("local function ") :]
    if re.search(r"(?<![\w.])(place|promote_due|promote_member|new_job)\(", body):
        assert "save_tail()" in body or "settle(" in body, (
            f"{name}.lua places jobs but never calls save_tail()"
        )


async def test_a_fetch_whose_reply_was_lost_is_handed_back_by_its_receipt(
    redis_base_url: str,
) -> None:
    from conveyor.backends.redis import _stubs as stubs

    driver = RedisDriver(redis_test_url(redis_base_url))
    await driver.open()
    try:
        await driver.job_insert_many([NewJob("a", "default", "t", b"{}")])
        keys = QueueKeys(driver._target.prefix, "default")
        call = stubs.fetch_call(
            keys,
            now=None,
            limit=5,
            lease_seconds=30,
            worker_id="w",
            promote_budget=10,
            receipt_ttl=300,
        )
        leased = await stubs.fetch(driver._c, call)  # pretend this reply never arrived
        assert len(leased.rows) == 1
        [job] = await driver.job_get_many(["a"])
        assert job is not None and job.state.value == "active" and job.attempt == 1
        again = await stubs.fetch(driver._c, call)  # a retried call returns the same job...
        assert [row[0] for row in again.rows] == [b"a"]
        await stubs.release(driver._c, call)  # ...and giving it back undoes the lease
        [job] = await driver.job_get_many(["a"])
        assert job is not None and job.state.value == "queued" and job.attempt == 0
        assert job.lease_token is None and job.worker_id is None
        [refetched] = await driver.job_fetch(FetchParams(("default",), 5, "w2", 30.0))
        assert refetched.id == "a" and refetched.attempt == 1
    finally:
        await driver.close()
