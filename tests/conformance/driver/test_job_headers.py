"""Job headers: stored verbatim, returned on every read, kept across the job's life."""

from __future__ import annotations

import dataclasses

import pytest

from conveyor._errors import InvalidArgument
from conveyor.core.headers import MAX_HEADERS_BYTES, encode_headers
from conveyor.drivers.protocol import Driver
from conveyor.drivers.records import (
    Dedup,
    DedupMode,
    InsertStatus,
    JobState,
    ListParams,
    TransitionKind,
)

from ._support import T0, fetch, finish, get, new_job

HEADERS = encode_headers(
    {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "é": "ü ✓"}
)


async def test_headers_are_returned_by_fetch_get_and_list(driver: Driver) -> None:
    await driver.job_insert_many(
        [dataclasses.replace(new_job("h"), headers=HEADERS), new_job("plain")], now=T0
    )
    assert (await get(driver, "h")).headers == HEADERS
    assert (await get(driver, "plain")).headers is None
    listed = {r.id: r.headers for r in await driver.job_list(ListParams())}
    assert listed == {"h": HEADERS, "plain": None}
    fetched = {r.id: r.headers for r in await fetch(driver, limit=2)}
    assert fetched == {"h": HEADERS, "plain": None}


async def test_headers_survive_retry_rescue_and_completion(driver: Driver) -> None:
    await driver.job_insert_many([dataclasses.replace(new_job("h"), headers=HEADERS)], now=T0)
    [record] = await fetch(driver)
    await finish(driver, record, TransitionKind.RETRY, error="boom", now=T0)
    [again] = await fetch(driver, now=T0 + 1)
    assert again.headers == HEADERS and again.attempt == 2
    await finish(driver, again, now=T0 + 2)
    done = await get(driver, "h")
    assert done.state is JobState.COMPLETED and done.headers == HEADERS


async def test_a_debounce_replacement_takes_the_new_headers(driver: Driver) -> None:
    dedup = Dedup(DedupMode.DEBOUNCE, "k")
    first = dataclasses.replace(new_job("d1", delay=10), dedup=dedup, headers=HEADERS)
    newer = encode_headers(
        {"traceparent": "00-1af7651916cd43dd8448eb211c80319c-b7ad6b71692033aa-01"}
    )
    second = dataclasses.replace(new_job("d2", delay=10), dedup=dedup, headers=newer)
    await driver.job_insert_many([first], now=T0)
    [result] = await driver.job_insert_many([second], now=T0 + 1)
    assert result.status is InsertStatus.REPLACED and result.id == "d1"
    assert (await get(driver, "d1")).headers == newer


@pytest.mark.parametrize(
    "bad",
    [
        "not json",
        "[1, 2]",
        '{"a": 1}',
        '{"a": "\\u0000"}',
        "{" + '"a":"' + "x" * MAX_HEADERS_BYTES + '"}',
    ],
)
async def test_malformed_headers_are_refused_before_any_write(driver: Driver, bad: str) -> None:
    jobs = [new_job("fine"), dataclasses.replace(new_job("bad"), headers=bad)]
    with pytest.raises(InvalidArgument, match="headers"):
        await driver.job_insert_many(jobs, now=T0)
    assert await driver.job_get_many(["fine", "bad"]) == [None, None]
