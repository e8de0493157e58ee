"""Queue call arguments: checked before anything is written, with errors naming the bad value."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import BaseModel, ConfigDict, Field

from conveyor import (
    ConveyorError,
    InvalidArgument,
    InvalidJobDefinition,
    JobState,
    Queue,
    Retry,
    Snooze,
    job,
)


class Ping(BaseModel):
    n: int


ping = job("test.ping", Ping)


@pytest.fixture
async def queue() -> AsyncIterator[Queue]:
    async with Queue.from_url(f"memory://{uuid.uuid4().hex}") as q:
        yield q


async def assert_nothing_written(queue: Queue) -> None:
    assert await queue.list_jobs() == []


def test_invalid_argument_is_a_conveyor_value_error() -> None:
    assert issubclass(InvalidArgument, ConveyorError)
    assert issubclass(InvalidArgument, ValueError)
    assert issubclass(InvalidJobDefinition, InvalidArgument)


@pytest.mark.parametrize(
    "delay", [float("nan"), float("inf"), float("-inf"), -1, timedelta(seconds=-1), "5", True]
)
async def test_bad_delay_is_refused(queue: Queue, delay: object) -> None:
    with pytest.raises(InvalidArgument, match="delay") as info:
        await queue.enqueue(ping, Ping(n=1), delay=delay)  # type: ignore[arg-type]
    assert not isinstance(info.value, InvalidJobDefinition)
    assert repr(delay) in str(info.value)
    await assert_nothing_written(queue)


@pytest.mark.parametrize("delay", [0, 0.5, timedelta(minutes=5)])
async def test_good_delay_is_accepted(queue: Queue, delay: float | timedelta) -> None:
    handle = await queue.enqueue(ping, Ping(n=1), delay=delay)
    info = await handle.info()
    assert info.state is (JobState.QUEUED if not delay else JobState.SCHEDULED)


async def test_bad_delay_by_name_is_refused(queue: Queue) -> None:
    with pytest.raises(InvalidArgument, match="nan"):
        await queue.enqueue_by_name("test.ping", {"n": 1}, delay=float("nan"))
    await assert_nothing_written(queue)


async def test_bad_delay_in_enqueue_many_writes_nothing(queue: Queue) -> None:
    with pytest.raises(InvalidArgument, match="inf"):
        await queue.enqueue_many(
            [ping.request(Ping(n=1)), ping.request(Ping(n=2), delay=float("inf"))]
        )
    await assert_nothing_written(queue)


@pytest.mark.parametrize("priority", [1_000_001, -1_000_001, 2**60, 1.5, float("nan"), False])
async def test_bad_priority_is_refused(queue: Queue, priority: object) -> None:
    with pytest.raises(InvalidArgument, match="priority") as info:
        await queue.enqueue(ping, Ping(n=1), priority=priority)  # type: ignore[arg-type]
    assert repr(priority) in str(info.value)
    with pytest.raises(InvalidArgument, match="priority"):
        await queue.enqueue_by_name("test.ping", {"n": 1}, priority=priority)  # type: ignore[arg-type]
    await assert_nothing_written(queue)


@pytest.mark.parametrize("priority", [-1_000_000, 1_000_000])
async def test_priority_at_the_bounds_is_accepted(queue: Queue, priority: int) -> None:
    info = await (await queue.enqueue(ping, Ping(n=1), priority=priority)).info()
    assert info.priority == priority


@pytest.mark.parametrize("attempts", [0, -3, 1001, 2.0, True])
async def test_bad_attempts_are_refused(queue: Queue, attempts: object) -> None:
    with pytest.raises(InvalidArgument, match="attempts must be an integer from 1 to 1000") as info:
        await queue.enqueue(ping, Ping(n=1), attempts=attempts)  # type: ignore[arg-type]
    assert repr(attempts) in str(info.value)
    await assert_nothing_written(queue)


@pytest.mark.parametrize("job_id", ["", "x" * 256, "a\nb", 42])
async def test_bad_job_id_is_an_invalid_argument(queue: Queue, job_id: object) -> None:
    with pytest.raises(InvalidArgument, match="job_id") as info:
        await queue.enqueue(ping, Ping(n=1), job_id=job_id)  # type: ignore[arg-type]
    assert not isinstance(info.value, InvalidJobDefinition)


async def test_delay_and_run_at_together_are_refused(queue: Queue) -> None:
    with pytest.raises(InvalidArgument, match="either delay or run_at"):
        await queue.enqueue(ping, Ping(n=1), delay=1, run_at=datetime.now(UTC))


async def test_naive_run_at_is_refused(queue: Queue) -> None:
    with pytest.raises(InvalidArgument, match="timezone-aware"):
        await queue.enqueue(ping, Ping(n=1), run_at=datetime(2030, 1, 1))


async def test_bad_queue_name_at_enqueue_is_an_invalid_argument(queue: Queue) -> None:
    with pytest.raises(InvalidArgument, match="invalid queue name"):
        await queue.enqueue(ping, Ping(n=1), queue="has space")


# -- aliased payloads end to end -----------------------------------------------------------------


class Invite(BaseModel):
    to_email: str = Field(alias="toEmail")


class InviteByName(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    to_email: str = Field(alias="toEmail")


invite = job("test.invite", Invite)
invite_by_name = job("test.invite_by_name", InviteByName)


async def test_payload_with_aliases_can_be_enqueued(queue: Queue) -> None:
    handle = await queue.enqueue(invite, Invite(toEmail="a@example.com"))
    assert (await handle.info()).payload == {"toEmail": "a@example.com"}
    handle = await queue.enqueue(invite_by_name, InviteByName(to_email="b@example.com"))
    assert (await handle.info()).payload == {"toEmail": "b@example.com"}


# -- inspect and repair --------------------------------------------------------------------------


@pytest.mark.parametrize("ids", ["abc", b"abc"])
async def test_retry_and_cancel_refuse_a_bare_string(queue: Queue, ids: str | bytes) -> None:
    await queue.enqueue(ping, Ping(n=1), job_id="a")
    with pytest.raises(TypeError, match=r"a list of job ids.*\[b?'abc'\]"):
        await queue.retry(ids)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="a list of job ids"):
        await queue.cancel(ids)  # type: ignore[arg-type]
    assert (await queue.get("a")) is not None
    assert (await queue.get("a")).state is JobState.QUEUED  # type: ignore[union-attr]


async def test_retry_and_cancel_take_any_sequence(queue: Queue) -> None:
    await queue.enqueue(ping, Ping(n=1), job_id="a")
    (result,) = await queue.cancel(("a",))
    assert result.job_id == "a"
    (result,) = await queue.retry(["a"])
    assert (await queue.get("a")).state is JobState.QUEUED  # type: ignore[union-attr]


@pytest.mark.parametrize("state", ["queued", JobState.ACTIVE, "scheduled"])
async def test_purge_refuses_unfinished_states(queue: Queue, state: str | JobState) -> None:
    with pytest.raises(InvalidArgument, match="only finished jobs can be purged"):
        await queue.purge(states=[state])


async def test_unknown_state_is_an_invalid_argument(queue: Queue) -> None:
    with pytest.raises(InvalidArgument, match=r"'bogus'.*failed"):
        await queue.purge(states=["bogus"])
    with pytest.raises(InvalidArgument, match="'bogus'"):
        await queue.list_jobs(state="bogus")


# -- handler signals -----------------------------------------------------------------------------


@pytest.mark.parametrize("delay", [float("nan"), float("inf"), -1, timedelta(seconds=-1)])
def test_snooze_and_retry_refuse_bad_delays(delay: float | timedelta) -> None:
    with pytest.raises(InvalidArgument, match="delay") as info:
        Snooze(delay)
    assert repr(delay) in str(info.value)
    with pytest.raises(InvalidArgument, match="delay"):
        Retry(delay=delay)


def test_snooze_and_retry_keep_good_delays_in_seconds() -> None:
    assert Snooze(timedelta(minutes=1)).delay == 60.0
    assert Snooze(0).delay == 0.0
    assert Retry(delay=2).delay == 2.0
    assert Retry().delay is None


async def test_run_times_and_delays_beyond_any_real_schedule_are_refused() -> None:
    from datetime import UTC, datetime, timedelta

    from conveyor import InvalidArgument, Queue

    async with Queue.from_url("memory://far-future") as q:
        with pytest.raises(InvalidArgument, match="run_at must be between 1970 and 2200"):
            await q.enqueue_by_name("x", {}, run_at=datetime(2300, 1, 1, tzinfo=UTC))
        with pytest.raises(InvalidArgument, match="at most 100 years"):
            await q.enqueue_by_name("x", {}, delay=timedelta(days=365 * 101))
        handle = await q.enqueue_by_name("x", {}, delay=timedelta(days=365 * 99))
        assert handle.id
