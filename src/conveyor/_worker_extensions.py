"""The extension points of :class:`conveyor.Worker`: middleware around handlers, hooks on
failed, retried and dead jobs, and observers (see :mod:`conveyor._middleware`,
:mod:`conveyor._hooks` and :mod:`conveyor.runtime.observers`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

from pydantic import BaseModel

from conveyor._definition import JobDef
from conveyor._errors import InvalidArgument
from conveyor._hooks import Hook, HookKind, Hooks, TypedHook
from conveyor._middleware import Middleware
from conveyor.runtime.observers import Observer, Observers

P = TypeVar("P", bound=BaseModel)


class WorkerExtensions:
    """Mixed into :class:`conveyor.Worker`, which sets the three registries up."""

    middleware: list[Middleware]
    hooks: Hooks
    observers: Observers

    def use(self, middleware: Middleware) -> Middleware:
        """Run ``middleware`` around every handler (see :mod:`conveyor._middleware`); the first
        registered is the outermost (inside the tracing span's middleware, when the worker
        traces: :mod:`conveyor.tracing`). Usable as a decorator."""
        if not callable(middleware):
            raise InvalidArgument(f"middleware must be callable, got {middleware!r}")
        self.middleware.append(middleware)
        return middleware

    def observe(self, observer: Observer) -> Observer:
        """Tell ``observer`` what happens to jobs (see :mod:`conveyor.runtime.observers`)."""
        self.observers.add(observer)
        return observer

    @overload
    def on_failed(self, target: Hook) -> Hook: ...
    @overload
    def on_failed(self, target: JobDef[P, Any]) -> Callable[[TypedHook[P]], TypedHook[P]]: ...
    def on_failed(self, target: Hook | JobDef[Any, Any]) -> Any:
        """Call the decorated hook after every failed attempt, retried or not (see
        :mod:`conveyor._hooks`); ``@worker.on_failed(definition)`` for that job's only."""
        return self._hook(HookKind.FAILED, target)

    @overload
    def on_retry(self, target: Hook) -> Hook: ...
    @overload
    def on_retry(self, target: JobDef[P, Any]) -> Callable[[TypedHook[P]], TypedHook[P]]: ...
    def on_retry(self, target: Hook | JobDef[Any, Any]) -> Any:
        """Call the decorated hook after a failed attempt that will be retried."""
        return self._hook(HookKind.RETRY, target)

    @overload
    def on_dead(self, target: Hook) -> Hook: ...
    @overload
    def on_dead(self, target: JobDef[P, Any]) -> Callable[[TypedHook[P]], TypedHook[P]]: ...
    def on_dead(self, target: Hook | JobDef[Any, Any]) -> Any:
        """Call the decorated hook when a job fails for good and lands in the failed
        (dead-letter) set: page someone here."""
        return self._hook(HookKind.DEAD, target)

    def _hook(self, kind: HookKind, target: Hook | JobDef[Any, Any]) -> Any:
        if isinstance(target, JobDef):
            definition: JobDef[Any, Any] = target  # pyright: ignore[reportUnknownVariableType]

            def register(hook: Any) -> Any:
                self.hooks.add(kind, hook, definition)
                return hook

            return register
        self.hooks.add(kind, target, None)
        return target
