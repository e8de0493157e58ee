"""job(): validation of definitions, and result encoding through the definition."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from conveyor import (
    Exponential,
    Fixed,
    InvalidArgument,
    InvalidJobDefinition,
    JobDef,
    JobRequest,
    job,
)
from conveyor.core.backoff import DEFAULT_BACKOFF


class Payload(BaseModel):
    n: int


class Summary(BaseModel):
    total: int
    labels: list[str]


def test_defaults() -> None:
    d = job("reports.build", Payload)
    assert isinstance(d, JobDef)
    assert d.name == "reports.build"
    assert d.payload_type is Payload
    assert d.queue == "default"
    assert d.attempts == 3
    assert d.backoff == DEFAULT_BACKOFF
    assert d.timeout is None
    assert d.priority == 0
    assert d.permanent == ()
    assert d.result_type is type(None)


def test_options_are_kept() -> None:
    d = job(
        "reports.build",
        Payload,
        result=int,
        queue="reports",
        attempts=7,
        backoff=Fixed(2.0),
        timeout=timedelta(seconds=90),
        priority=-3,
        permanent=(KeyError, ValueError),
    )
    assert (d.queue, d.attempts, d.backoff, d.timeout, d.priority) == (
        "reports",
        7,
        Fixed(2.0),
        90.0,
        -3,
    )
    assert d.permanent == (KeyError, ValueError)
    assert d.result_type is int
    assert "reports.build" in repr(d) and "Payload" in repr(d)


@pytest.mark.parametrize(
    "name",
    ["email.send_invite", "a", "A-b:c.d_e", "0starts-with-digit", "_private", "x" * 200],
)
def test_valid_names(name: str) -> None:
    assert job(name, Payload).name == name


@pytest.mark.parametrize(
    "name",
    ["", " ", "has space", "-leading-dash", ".leading.dot", "slash/name", "x" * 201, "tab\t", "é"],
)
def test_invalid_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidJobDefinition, match="invalid job name"):
        job(name, Payload)


@pytest.mark.parametrize("attempts", [0, -1, 1001, 2.5, True, "3", None])
def test_attempts_outside_one_to_a_thousand_are_refused(attempts: object) -> None:
    with pytest.raises(
        InvalidJobDefinition, match="attempts must be an integer from 1 to 1000"
    ) as info:
        job("j", Payload, attempts=attempts)  # type: ignore[arg-type]
    assert repr(attempts) in str(info.value)


def test_a_thousand_attempts_are_allowed() -> None:
    assert job("j", Payload, attempts=1000).attempts == 1000


@pytest.mark.parametrize("priority", [1_000_001, -1_000_001, 2**53, 1.5, float("nan"), True, "1"])
def test_priority_outside_the_range_is_refused(priority: object) -> None:
    with pytest.raises(InvalidJobDefinition, match="priority must be an integer from") as info:
        job("j", Payload, priority=priority)  # type: ignore[arg-type]
    assert repr(priority) in str(info.value)


@pytest.mark.parametrize("priority", [-1_000_000, 0, 1_000_000])
def test_priority_at_the_bounds_is_allowed(priority: int) -> None:
    assert job("j", Payload, priority=priority).priority == priority


def test_invalid_definition_is_an_invalid_argument() -> None:
    assert issubclass(InvalidJobDefinition, InvalidArgument)


def test_one_attempt_is_allowed() -> None:
    assert job("j", Payload, attempts=1).attempts == 1


@pytest.mark.parametrize("payload", [dict, int, Payload(n=1), "Payload", None, BaseModel.__class__])
def test_payload_must_be_a_basemodel_subclass(payload: object) -> None:
    with pytest.raises(InvalidJobDefinition, match="pydantic BaseModel subclass"):
        job("j", payload)  # type: ignore[call-overload]


@pytest.mark.parametrize("queue", ["", "has space", "-x", "q/1", "x" * 101, "a:b"])
def test_bad_queue_names_are_refused(queue: str) -> None:
    with pytest.raises(InvalidJobDefinition, match="invalid queue name"):
        job("j", Payload, queue=queue)


@pytest.mark.parametrize("queue", ["emails", "a.b-c_d", "x" * 100, "0"])
def test_good_queue_names(queue: str) -> None:
    assert job("j", Payload, queue=queue).queue == queue


@pytest.mark.parametrize("timeout", [0, -1, timedelta(0), timedelta(seconds=-5)])
def test_timeout_must_be_positive(timeout: float | timedelta) -> None:
    with pytest.raises(InvalidJobDefinition, match="timeout must be > 0"):
        job("j", Payload, timeout=timeout)


@pytest.mark.parametrize("timeout", [float("nan"), float("inf"), float("-inf")])
def test_timeout_must_be_finite(timeout: float | timedelta) -> None:
    with pytest.raises(InvalidJobDefinition, match="finite") as info:
        job("j", Payload, timeout=timeout)
    assert repr(timeout) in str(info.value)


def test_invalid_definition_is_a_value_error() -> None:
    assert issubclass(InvalidJobDefinition, ValueError)


def test_request_builds_a_job_request() -> None:
    d = job("j", Payload, result=int)
    r = d.request(Payload(n=1), job_id="x", delay=5, priority=2, queue="q", attempts=4)
    assert r == JobRequest(d, Payload(n=1), "x", 5, None, 2, "q", 4)


# -- results -------------------------------------------------------------------------------------


def test_str_result_round_trip() -> None:
    d = job("j", Payload, result=str)
    data = d.encode_result("sent")
    assert data == b'"sent"'
    assert d.decode_result(data) == "sent"


def test_none_result_round_trip() -> None:
    d = job("j", Payload)
    assert d.encode_result(None) == b"null"
    assert d.decode_result(b"null") is None


def test_list_of_int_result_round_trip() -> None:
    d = job("j", Payload, result=list[int])
    data = d.encode_result([1, 2, 3])
    assert data == b"[1,2,3]"
    assert d.decode_result(data) == [1, 2, 3]


def test_model_result_round_trip() -> None:
    d = job("j", Payload, result=Summary)
    value = Summary(total=3, labels=["a", "b"])
    data = d.encode_result(value)
    decoded = d.decode_result(data)
    assert isinstance(decoded, Summary)
    assert decoded == value


class Aliased(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    total_count: int = Field(alias="totalCount")


class AliasedOnly(BaseModel):
    total_count: int = Field(alias="totalCount")


@pytest.mark.parametrize("model", [Aliased, AliasedOnly])
def test_aliased_model_result_round_trip(model: type[Aliased] | type[AliasedOnly]) -> None:
    d = job("j", Payload, result=model)
    value = model.model_validate({"totalCount": 3})
    data = d.encode_result(value)
    assert data == b'{"totalCount":3}'
    assert d.decode_result(data) == value


def test_decode_result_validates_against_the_result_type() -> None:
    d = job("j", Payload, result=list[int])
    with pytest.raises(ValidationError):
        d.decode_result(b'["not", "ints"]')


def test_backoff_is_any_strategy() -> None:
    d = job("j", Payload, backoff=Exponential(base=0.5, cap=10, jitter=False))
    assert d.backoff == Exponential(base=0.5, cap=10, jitter=False)


def test_union_and_literal_results_round_trip() -> None:
    from typing import Literal

    maybe = job("defs.maybe", Payload, result=int | None)
    assert maybe.decode_result(maybe.encode_result(None)) is None
    assert maybe.decode_result(maybe.encode_result(3)) == 3
    word = job("defs.word", Payload, result=Literal["ok", "bad"])
    assert word.decode_result(word.encode_result("ok")) == "ok"
    with pytest.raises(ValueError):
        word.decode_result(b'"maybe"')
