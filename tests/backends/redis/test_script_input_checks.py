"""Every script checks all of its arguments before its first write: a batch with one bad item
in the middle is refused whole, with an error naming the script and the problem, and the store
is left exactly as it was (no job taken out of ``active`` with its next item unparsed).

The scripts are called directly, past the driver's own checks, as a foreign or buggy caller
would call them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from conveyor.backends.redis import RedisDriver
from conveyor.backends.redis._keys import Namespace, QueueKeys
from conveyor.backends.redis._lua import load
from conveyor.backends.redis._resp import ReplyError
from conveyor.backends.redis._script_keys import SCRIPT_KEYS
from conveyor.backends.redis._stubs import run
from conveyor.drivers.records import FetchParams, JobRecord, NewJob
from tests.backends.redis.consistency import problems
from tests.backends.redis.snapshot import snapshot
from tests.conftest import redis_test_url

T0 = 1_700_000_000.0


@dataclass
class Store:
    driver: RedisDriver
    raw: redis.Redis
    prefix: str
    keys: QueueKeys
    ns: Namespace
    active: list[JobRecord]  # a and b, leased at T0


@pytest.fixture
async def store(redis_base_url: str) -> AsyncIterator[Store]:
    url = redis_test_url(redis_base_url)
    driver = RedisDriver(url)
    await driver.open()
    prefix = url.rsplit("prefix=", 1)[1]
    jobs = [NewJob(i, "default", "t", b"{}") for i in ("a", "b", "c")]
    await driver.job_insert_many(jobs, now=T0)
    await driver.job_insert_many([NewJob("later", "default", "t", b"{}", delay=60)], now=T0)
    active = await driver.job_fetch(FetchParams(("default",), 2, "w", 30.0), now=T0)
    await driver.job_cancel_many(["c"], now=T0)  # a stale ready-list entry to account for
    with redis.Redis.from_url(redis_base_url) as raw:
        yield Store(driver, raw, prefix, driver._store.keys("default"), Namespace(prefix), active)
    await driver.close()


def queue_keys(store: Store, script: str) -> tuple[str, ...]:
    names = SCRIPT_KEYS[script][0]
    if script == "job_fetch":
        receipt = store.keys.receipt("r1")
        return (*store.keys.named(script, names[:-2]), receipt, receipt)
    if script in ("job_purge", "job_prune_finished"):
        from conveyor.drivers.records import JobState

        state = JobState.COMPLETED
        more = (store.keys.ready, store.keys.dead, store.keys.meta) if script == "job_purge" else ()
        groups = (
            store.keys.groups,
            store.keys.ring,
            store.keys.group_idle,
            store.keys.group_records,
        )
        return (
            *(store.keys.jobs, store.keys.set_of(state), store.keys.by_seq(state), *more),
            *(store.keys.dedup, store.keys.dedup_jobs, store.keys.expiring),
            *(groups if script == "job_purge" else ()),
        )
    if script == "worker_heartbeat":
        return (store.ns.workers, store.ns.worker_info, store.ns.worker_order)
    if script == "leader_acquire":
        return (store.ns.leader("maintenance"),)
    if script == "cron_fire":
        return (*store.keys.named(script, names[:-1]), store.keys.cron("nightly"))
    return store.keys.named(script, names)


def token(store: Store, n: int) -> str:
    value = store.active[n].lease_token
    assert value is not None
    return value


# Per script: the arguments of a call whose first item is valid and whose second is not (or,
# for a script without items, one bad argument), and what the error must say.
def bad_calls(store: Store) -> list[tuple[str, Sequence[Any], str]]:
    a, b = token(store, 0), token(store, 1)
    good_finish = ("a", a, "complete", "=1", "", 0)
    good_job = ("n1", "t", "{}", 0, 3, "", 0, "", "", "", "", "")  # ..., group, limits, headers
    grouped = ("g1", "t", "{}", 0, 3, "", 0, "", "", "t:acme", "2,5,1.0", "")
    cron_job = ("n1", "t", "{}", 0, 3, "", 0, "", "", "", "", "")
    keyed = ("k1", "t", "{}", 0, 3, "", 0, "until_started", "key", 0, "", "", "", "", "")
    k2 = ("k2", "t", "{}", 0, 3, "", 0)  # a second job, before its dedup and retention
    return [
        ("job_finish_many", (T0, "", "cancelled", 2, *good_finish, "b", b, "retry", "", "", "nan"),
         "job 'b': delay must be seconds from 0 to 3153600000, got 'nan'"),
        ("job_finish_many", (T0, "", "cancelled", 2, *good_finish, "b", b, "explode", "", "", 0),
         "job 'b': the transition must be complete, retry, snooze, fail, cancel or requeue"),
        ("job_finish_many", (T0, "", "cancelled", 2, *good_finish, "b", b, "fail", "oops", "", 0),
         "job 'b': the result must be '' or '=' and the value, got 'oops'"),
        ("job_finish_many", (T0, "", "cancelled", 3, *good_finish),
         "the finish count must say how many finishes of 6 arguments follow"),
        ("job_finish_many", ("yesterday", "", "cancelled", 1, *good_finish),
         "now must be epoch seconds from 0 to 7258118400, got 'yesterday'"),
        ("job_insert_many", (T0, 2, *good_job, "n2", "t", "{}", "urgent", 3, "", 0, "", "", "", "",
                             ""),
         "job 'n2': priority must be a whole number from -1000000 to 1000000"),
        ("job_insert_many", (T0, 2, *good_job, "n2", "t", "{}", 0, 0, "", 0, "", "", "", "", ""),
         "job 'n2': max_attempts must be a whole number from 1 to 1000, in digits"),
        ("job_insert_many", (T0, 2, *good_job, "n2", "t", "{}", 0, 3, "inf", 0, "", "", "", "", ""),
         "job 'n2': run_at must be epoch seconds from 0 to 7258118400, got 'inf'"),
        ("job_insert_many", (T0, 2, *good_job, "n2", "t", "{}", 0, 3, "", -5, "", "", "", "", ""),
         "job 'n2': delay must be seconds from 0 to 3153600000, got '-5'"),
        ("job_insert_dedup", (T0, 2, *keyed, *k2, "often", "key", 0, "", "", "", "", ""),
         "job 'k2': mode must be until_started, until_finished, throttle, debounce or ''"),
        ("job_insert_dedup", (T0, 2, *keyed, *k2, "throttle", "key", 0, "", "", "", "", ""),
         "job 'k2': a throttle ttl must be more than 0 seconds"),
        ("job_insert_dedup", (T0, 2, *keyed, *k2, "until_started", "", 0, "", "", "", "", ""),
         "job 'k2': the dedup key must not be empty"),
        ("job_insert_dedup", (T0, 2, *keyed, *k2, "debounce", "key", 0, "", "", "", "", ""),
         "job 'k2': a debounced job needs a delay greater than 0 and no run_at"),
        ("job_insert_dedup", (T0, 2, *keyed, *k2, "debounce", "k", 5, "", "", "", "", ""),
         "job 'k2': only a throttle has a ttl"),
        ("job_insert_dedup", (T0, 2, *keyed, "k2", "t", "{}", 0, 0, "", 0, "", "", 0, "", "",
                              "", "", ""),
         "job 'k2': max_attempts must be a whole number from 1 to 1000, in digits"),
        ("job_insert_dedup", (T0, 2, *keyed, *k2, "", "", 0, "-1", "", "", "", ""),
         "job 'k2': a retention must be seconds from 0 to 3153600000, got '-1'"),
        ("job_insert_many", (T0, 2, *good_job, "n2", "t", "{}", 0, 3, "", 0, "-1", "", "", "", ""),
         "job 'n2': a retention must be seconds from 0 to 3153600000, got '-1'"),
        ("job_insert_many", (T0, 2, *good_job, "n2", "t", "{}", 0, 3, "", 0, "", "nan", "", "", ""),
         "job 'n2': a retention must be seconds from 0 to 3153600000, got 'nan'"),
        ("job_progress_many", (T0, 2, "a", a, 0.5, "", "b", b, 1.5, ""),
         "job 'b': progress must be a number from 0 to 1, got '1.5'"),
        ("job_progress_many", (T0, 2, "a", a, 0.5, "=ok", "b", "", 0.5, ""),
         "job 'b': the token must not be empty"),
        ("job_progress_many", (T0, 2, "a", a, 0.5, "", "b", b, 0.5, "raw"),
         "job 'b': the message must be '' or '=' and the message, got 'raw'"),
        ("job_progress_many", (T0, 3, "a", a, 0.5, ""),
         "the update count must say how many updates of 4 arguments follow"),
        ("job_prune_expired", ("later", b"x"), "now must be epoch seconds"),
        ("job_extend_leases", (T0, 30, "a", a, "", "b", b, "yes"),
         "job 'b': isolated must be '' or '1', got 'yes'"),
        ("job_extend_leases", (T0, "nan", "a", a, ""),
         "lease_seconds must be seconds from 0 to 3153600000, got 'nan'"),
        ("job_rescue_many", (T0 + 60, "cancelled", 2, "a", a, "requeue", 1, "e",
                             "b", b, "complete", 1, "e"),
         "job 'b': a rescue must requeue, fail or cancel, got 'complete'"),
        ("job_rescue_many", (T0 + 60, "cancelled", 2, "a", a, "requeue", 1, "e",
                             "b", b, "fail", -1, "e"),
         "job 'b': stalls must be a whole number from 0, got '-1'"),
        ("job_cancel_many", ("nan", "cancelled", "later", "a"), "now must be epoch seconds"),
        ("job_retry_many", ("1e300", "c"), "now must be epoch seconds"),
        ("job_promote_due", (T0 + 100, "scheduled", b"x", "active", b"y"),
         "the set must be 'scheduled' or 'retrying', got 'active'"),
        ("job_fetch", (T0, 5, 30, "w", "base", "steal", 10, 300000, "", "", ""),
         "mode must be 'lease', 'peek' or 'release', got 'steal'"),
        ("job_fetch", (T0, 5, 30, "w", "base", "lease", 10, 0, "", "", ""),
         "receipt_ttl must be whole milliseconds from 1, got '0'"),
        ("job_fetch", (T0, 5, 30, "w", "", "lease", 10, 300000, "", "", ""),
         "token_base must not be empty"),
        ("job_fetch", (T0, 5, 30, "w", "base", "lease", 10, 300000, "", 0, 1),
         "rate_count must be a whole number from 1 to 10000, got '0'"),
        ("job_fetch", (T0, 5, 30, "w", "base", "lease", 10, 300000, "", 5, 0),
         "rate_per must be more than 0 seconds, got '0'"),
        ("job_fetch", (T0, 5, 30, "w", "base", "lease", 10, 300000, ""),
         "expected 11 arguments"),
        ("rate_limit_block", (T0, -1), "seconds must be from 0 to 86400, got '-1'"),
        ("rate_limit_block", ("soon", 1), "now must be epoch seconds"),
        ("rate_limit_wait", (T0, 5, "nan"), "rate_per must be seconds from 0 to 86400"),
        ("rate_limit_wait", (T0, "", ""), "rate_count and rate_per are needed"),
        ("job_purge", ("everything", "", 100), "the state is unknown, got 'everything'"),
        ("job_purge", ("completed", "", 0), "chunk must be a whole number from 1 to 10000"),
        ("job_prune_finished", ("trim", -1, 10), "keep must be a whole number from 0, got '-1'"),
        ("job_prune_finished", ("shred", b"x"), "the mode must be 'members' or 'trim'"),
        ("job_list", (20, "", 500, "queued", "", "lost", ""), "the state is unknown, got 'lost'"),
        ("worker_heartbeat", (T0, "forever", "w", "{}"),
         "ttl must be seconds from 0 to 3153600000, got 'forever'"),
        ("leader_acquire", (T0, -1, "me"), "ttl must be seconds from 0 to 3153600000, got '-1'"),
        ("cron_fire", (T0, 1.5, "0", *cron_job), "tick must be whole epoch seconds, got '1.5'"),
        ("cron_fire", (T0, 60, "0", "n1", "t", "{}", 0, 3, "", -5, "", "", "", "", ""),
         "job 'n1': delay must be seconds from 0 to 3153600000, got '-5'"),
        ("cron_fire", (T0, 60, "0", "n1", "t", "{}", 0, 3, ""), "expected 15 arguments"),
        ("cron_fire", (T0, 60, "0", *cron_job[:7], "", "-1", "", "", ""),
         "a retention must be seconds from 0 to 3153600000, got '-1'"),
        ("cron_fire", (T0, 60, "0", *cron_job[:9], "", "1,0,0.0", ""),
         "job 'n1': a job without a group has no group limits, got '1,0,0.0'"),
        ("job_insert_many", (T0, 2, *grouped, "n2", "t", "{}", 0, 3, "", 0, "", "", "k", "1,5,0",
                             ""),
         "job 'n2': group limits must be <concurrency 0-10000>,<rate count 0-1000>,"),
        ("job_insert_many", (T0, 2, *grouped, "n2", "t", "{}", 0, 3, "", 0, "", "", "k", "x", ""),
         "job 'n2': group limits must be"),
        ("job_insert_many", (T0, 2, *grouped, "n2", "t", "{}", 0, 3, "", 0, "", "", "k",
                             "10001,0,0.0", ""), "job 'n2': group limits must be"),
        ("job_insert_many", (T0, 2, *grouped, "n2", "t", "{}", 0, 3, "", 0, "", "", "a\x00b",
                             "1,0,0.0", ""), "job 'n2': the group key must be 1 to 512 characters"),
        ("job_insert_dedup", (T0, 2, *keyed[:-3], *grouped[-3:], "k2", "t", "{}", 0, 3, "", 0,
                              "", "", 0, "", "", "k", "1,1001,1.0", ""),
         "job 'k2': group limits must be"),
        ("group_block", (T0, "", 5), "the group key must be 1 to 512 characters without NUL"),
        ("group_block", (T0, "t:acme", -1), "seconds must be from 0 to 86400, got '-1'"),
        ("group_block", ("soon", "t:acme", 1), "now must be epoch seconds"),
        ("group_wait", ("later",), "now must be epoch seconds"),
        ("group_wait", (T0, "t", ""), "a name must not be empty"),
        ("group_prune", (T0, -1), "limit must be a whole number from 0, got '-1'"),
        ("group_prune", (T0,), "expected 2 arguments"),
        ("job_delete_many", (3, "a", "b"), "the id count must say how many ids follow"),
        ("job_delete_many", ("all", "a"), "the id count must be a whole number from 0"),
        ("stats_add", (T0, 180, 2, 28_333_333, 1, 0, 0, 28_333_333, -1, 0, 0),
         "a count must be a whole number from 0, below 2**53, got '-1'"),
        ("stats_add", (T0, 180, 1, 1.5, 1, 0, 0), "a minute must be a whole number from 0"),
        ("stats_add", (T0, 180, 2, 28_333_333, 1, 0, 0),
         "the sample count must say how many samples of 4 arguments follow"),
        ("stats_add", ("soon", 180, 0), "now must be epoch seconds"),
    ]  # fmt: skip


async def test_every_script_refuses_a_bad_item_whole_and_writes_nothing(store: Store) -> None:
    before = snapshot(store.raw, store.prefix)
    assert before, "the fixture wrote jobs"
    for script, args, problem in bad_calls(store):
        with pytest.raises(ReplyError) as refused:
            await run(store.driver._c, load(script), queue_keys(store, script), args)
        message = str(refused.value)
        assert message.startswith(f"ERR conveyor {script}: "), message
        assert problem in message, message
        assert snapshot(store.raw, store.prefix) == before, f"{script} wrote: {message}"
    assert problems(store.driver.source_url) == []


def test_every_script_with_arguments_is_exercised() -> None:
    # A new script must come with a bad call above (leader_release and queue_* take none).
    covered = {
        "job_finish_many", "job_insert_many", "job_insert_dedup", "job_extend_leases",
        "job_rescue_many", "job_cancel_many", "job_retry_many", "job_promote_due", "job_fetch",
        "job_purge", "job_prune_finished", "job_list", "worker_heartbeat", "leader_acquire",
        "cron_fire", "job_progress_many", "job_prune_expired", "rate_limit_block",
        "rate_limit_wait", "group_block", "group_wait", "group_prune", "job_delete_many",
        "stats_add",
    }  # fmt: skip
    assert set(SCRIPT_KEYS) - covered == {"leader_release", "queue_notify", "queue_resume"}


async def test_valid_calls_after_refused_ones_still_apply(store: Store) -> None:
    # The refusals above must not have been mistaken for "nothing to do": the same first items
    # alone go through.
    a = token(store, 0)
    keys = queue_keys(store, "job_finish_many")
    args = (T0 + 1, "", "cancelled", 1, "a", a, "complete", "=1", "", 0)
    assert await run(store.driver._c, load("job_finish_many"), keys, args) == [b"ok"]
    [done] = await store.driver.job_get_many(["a"])
    assert done is not None and done.state.value == "completed" and done.result == b"1"
    assert problems(store.driver.source_url) == []
