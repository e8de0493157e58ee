"""Handlers by job name. Jobs are resolved only through this registry, never by import path."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeAlias, TypeVar

from pydantic import BaseModel

from conveyor._context import JobContext
from conveyor._definition import JobDef
from conveyor._errors import DuplicateHandler, MissingHandlers

P = TypeVar("P", bound=BaseModel)
R = TypeVar("R")

Handler: TypeAlias = Callable[[P, JobContext], Awaitable[R]] | Callable[[P, JobContext], R]


@dataclass(frozen=True, slots=True)
class Registered:
    definition: JobDef[Any, Any]
    handler: Callable[..., Any]
    is_async: bool


class HandlerRegistry:
    def __init__(self) -> None:
        self._by_name: dict[str, Registered] = {}
        self._declared: dict[str, JobDef[Any, Any]] = {}

    def add(self, definition: JobDef[Any, Any], handler: Callable[..., Any]) -> None:
        if definition.name in self._by_name:
            existing = self._by_name[definition.name].handler
            raise DuplicateHandler(
                f"job {definition.name!r} already has handler {existing.__qualname__}; "
                f"cannot also register {handler.__qualname__}"
            )
        is_async = inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
            getattr(handler, "__call__", None)  # noqa: B004 - async callable objects
        )
        self._by_name[definition.name] = Registered(definition, handler, is_async)
        self._declared.setdefault(definition.name, definition)

    def declare(self, definitions: Iterable[JobDef[Any, Any]] | ModuleType) -> None:
        """Record definitions this worker must serve, handled or not (checked at start)."""
        items: Iterable[Any] = (
            list(vars(definitions).values()) if isinstance(definitions, ModuleType) else definitions
        )
        for item in items:
            if isinstance(item, JobDef):
                definition: JobDef[Any, Any] = item  # pyright: ignore[reportUnknownVariableType]
                self._declared.setdefault(definition.name, definition)

    def get(self, name: str) -> Registered | None:
        return self._by_name.get(name)

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def definitions(self) -> list[JobDef[Any, Any]]:
        return [self._declared[name] for name in sorted(self._declared)]

    def missing(self) -> list[str]:
        return sorted(set(self._declared) - set(self._by_name))

    def check(self) -> None:
        missing = self.missing()
        if missing:
            raise MissingHandlers(missing)

    def queues(self) -> tuple[str, ...]:
        return tuple(sorted({d.queue for d in self._declared.values()}))
