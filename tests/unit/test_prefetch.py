"""The prefetch limit: what ``"auto"`` leases ahead as the worker's jobs get shorter or longer,
what a number does, and which settings are refused."""

from __future__ import annotations

import math

import pytest

from conveyor import WorkerConfig
from conveyor.runtime.prefetch import (
    SHORT_JOB,
    Prefetch,
    PrefetchSetting,
    check_prefetch,
)


def test_auto_leases_nothing_ahead_until_a_job_has_finished() -> None:
    assert Prefetch("auto", 8).limit == 0


def test_auto_leases_a_slot_s_worth_while_jobs_are_short() -> None:
    prefetch = Prefetch("auto", 8)
    prefetch.observe(SHORT_JOB / 10)
    assert prefetch.limit == 8


def test_auto_stops_leasing_ahead_once_jobs_get_long_and_starts_again_when_they_are_short() -> None:
    prefetch = Prefetch("auto", 8)
    for _ in range(5):
        prefetch.observe(0.001)
    assert prefetch.limit == 8
    prefetch.observe(1.0)  # one slow job is enough to pull the average over the line
    assert prefetch.limit == 0
    observed = 0
    while prefetch.limit == 0:
        prefetch.observe(0.001)
        observed += 1
        assert observed < 100, "the average never came back down"
    assert observed > 1  # it takes several short jobs, not the next one alone


def test_auto_ignores_values_that_are_not_run_times() -> None:
    prefetch = Prefetch("auto", 4)
    for bad in (math.nan, -1.0):
        prefetch.observe(bad)
    assert prefetch.limit == 0
    prefetch.observe(0.001)
    prefetch.observe(math.nan)
    assert prefetch.limit == 4


@pytest.mark.parametrize("setting", [0, 3, 500])
def test_a_number_is_the_limit_whatever_the_jobs_take(setting: int) -> None:
    prefetch = Prefetch(setting, 8)
    assert prefetch.limit == setting
    prefetch.observe(60.0)
    assert prefetch.limit == setting
    assert prefetch.most == setting


def test_the_most_auto_leases_ahead_is_the_concurrency() -> None:
    assert Prefetch("auto", 8).most == 8


@pytest.mark.parametrize("bad", [-1, 1.5, "AUTO", "2", None, True])
def test_bad_settings_are_refused_naming_the_value(bad: object) -> None:
    with pytest.raises(ValueError, match="prefetch must be 'auto' or an int >= 0"):
        check_prefetch(bad)
    with pytest.raises(ValueError, match=repr(bad).replace(".", r"\.")):
        WorkerConfig(prefetch=bad)  # type: ignore[arg-type]


def test_the_default_is_auto() -> None:
    assert WorkerConfig().prefetch == "auto"
    assert WorkerConfig(prefetch=0).prefetch == 0


def test_auto_never_leases_ahead_where_the_backend_says_it_does_not_pay() -> None:
    prefetch = Prefetch("auto", 8, auto=False)
    for _ in range(50):
        prefetch.observe(0.0001)
    assert prefetch.limit == 0
    assert Prefetch("auto", 8, auto=False).most == 0
    # A number is the user's choice, whatever the backend.
    assert Prefetch(3, 8, auto=False).limit == 3
    assert Prefetch(3, 8, auto=False).most == 3


def test_only_redis_declares_that_leasing_ahead_pays() -> None:
    from conveyor.backends.memory import MemoryDriver
    from conveyor.backends.postgres.driver import PostgresDriver
    from conveyor.backends.redis.driver import RedisDriver
    from conveyor.backends.sqlite.driver import SQLiteDriver
    from conveyor.drivers.protocol import Capability

    declared = {
        cls.__name__: Capability.LEASE_AHEAD in cls.capabilities
        for cls in (MemoryDriver, SQLiteDriver, RedisDriver, PostgresDriver)
    }
    assert declared == {
        "MemoryDriver": False,
        "SQLiteDriver": False,
        "RedisDriver": True,
        "PostgresDriver": False,
    }


@pytest.mark.parametrize("setting", ["auto", 4])
def test_after_jobs_waited_too_long_nothing_is_leased_ahead_until_a_job_finishes(
    setting: PrefetchSetting,
) -> None:
    prefetch = Prefetch(setting, 4)
    prefetch.observe(0.001)
    assert prefetch.limit == 4
    prefetch.hold_off()
    assert prefetch.limit == 0
    prefetch.observe(0.001)
    assert prefetch.limit == 4


def test_nothing_is_leased_ahead_where_it_is_not_allowed_whatever_the_setting() -> None:
    for setting in ("auto", 7):
        prefetch = Prefetch(setting, 4, allowed=False)
        prefetch.observe(0.001)
        assert prefetch.limit == 0


def test_an_infinite_run_time_cannot_poison_the_average() -> None:
    prefetch = Prefetch("auto", 4)
    prefetch.observe(math.inf)  # inf - inf would make the average NaN for good
    prefetch.observe(0.001)
    assert prefetch.limit == 4


def test_the_most_is_nothing_where_leasing_ahead_is_not_allowed() -> None:
    assert Prefetch("auto", 4, allowed=False).most == 0
    assert Prefetch(7, 4, allowed=False).most == 0
