"""The hot paths' constructors build what the dataclasses' own constructors build, and stay
frozen; a class they cannot serve is refused rather than built wrong."""

from __future__ import annotations

import dataclasses

import pytest

from conveyor._definition import JobRequest
from conveyor._slots import fast_constructor
from conveyor.drivers.records import FinishJob, InsertResult, JobRecord, NewJob, TransitionResult


@pytest.mark.parametrize(
    "cls", [JobRecord, NewJob, FinishJob, TransitionResult, InsertResult, JobRequest]
)
def test_the_fast_constructor_equals_the_dataclass_constructor(cls: type[object]) -> None:
    make = fast_constructor(cls)
    values = {f.name: f"value of {f.name}" for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    by_position = make(*values.values())
    by_name = make(**values)
    assert by_position == by_name == cls(**values)
    assert type(by_position) is cls
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(by_position, next(iter(values)), "other")
    with pytest.raises(TypeError):
        make(*list(values.values())[:-1])  # every field must be given: no default is implied


def test_a_class_it_cannot_serve_is_refused() -> None:
    @dataclasses.dataclass(frozen=True)
    class Unslotted:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        a: int

        def __post_init__(self) -> None:
            pass

    @dataclasses.dataclass(frozen=True, slots=True)
    class Clashing:
        _made_self: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class NamedSelf:  # a field named like the usual first parameter is fine
        self: int
        cls: int

    with pytest.raises(TypeError, match="not a slotted dataclass"):
        fast_constructor(Unslotted)
    with pytest.raises(TypeError, match="field name"):
        fast_constructor(Clashing)
    made = fast_constructor(NamedSelf)(1, 2)
    assert made == NamedSelf(1, 2) and made.self == 1
    with pytest.raises(TypeError, match="__post_init__"):
        fast_constructor(Checked)
