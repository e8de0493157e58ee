"""Constructors for the frozen, slotted dataclasses made once per job on the hot paths.

A frozen dataclass's ``__init__`` stores each field through ``object.__setattr__`` (frozen
forbids plain assignment), which makes building a 13-field ``NewJob`` cost ~1.8 µs, as much as
the rest of building the job. The constructor made here stores the fields through the slots'
own descriptors instead: the same object (there is no ``__post_init__`` to skip, and no default
is left out: every field is passed), still frozen afterwards, at a third of the cost.
"""

from __future__ import annotations

import dataclasses
import keyword
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def fast_constructor(cls: type[T]) -> Callable[..., T]:
    """A function taking every field of the slotted dataclass ``cls``, in order (positionally or
    by name, none optional), that returns what ``cls(...)`` with the same values would."""
    if not dataclasses.is_dataclass(cls) or "__slots__" not in vars(cls):
        raise TypeError(f"{cls.__name__} is not a slotted dataclass")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has a __post_init__ that this constructor would skip")
    names = [f.name for f in dataclasses.fields(cls)]
    # The generated text holds only the dataclass's own field names, checked to be identifiers
    # that cannot stand for the function's own names (all of which begin with "_made_").
    if not all(n.isidentifier() and not keyword.iskeyword(n) for n in names) or any(
        n.startswith("_made_") for n in names
    ):
        raise TypeError(f"{cls.__name__} has a field name this constructor cannot take")
    lines = [f"    _made_set_{name}(_made_self, {name})" for name in names]
    code = f"def make({', '.join(names)}):\n    _made_self = _made_new(_made_cls)\n"
    code += "\n".join(lines) + "\n    return _made_self\n"
    scope: dict[str, Any] = {"_made_new": object.__new__, "_made_cls": cls}
    scope.update({f"_made_set_{name}": getattr(cls, name).__set__ for name in names})
    exec(code, scope)
    maker: Callable[..., T] = scope["make"]
    maker.__qualname__ = maker.__name__ = f"new_{cls.__name__}"
    return maker
