"""Middleware: code that runs around every handler a worker calls.

A middleware is ``async def mw(call: JobCall, call_next: CallNext) -> object``: it may act
before and after ``await call_next()`` (which runs the next middleware, and at the end the
handler), look at the job (``call.ctx``, ``call.payload``, ``call.headers``), time it, set
context variables (they reach sync handlers' threads too), or raise. It runs inside the job's
timeout, and what it raises is the job's error, exactly as if the handler had raised it; what
it returns is the job's result. Register with ``worker.use(mw)``: the first registered is the
outermost.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from conveyor._context import JobContext
from conveyor._definition import JobDef

CallNext = Callable[[], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class JobCall:
    """One attempt of one job, as middleware sees it."""

    ctx: JobContext
    payload: BaseModel
    definition: JobDef[Any, Any]
    headers: Mapping[str, str]


Middleware = Callable[[JobCall, CallNext], Awaitable[object]]


def chain(middleware: Sequence[Middleware], call: JobCall, handler: CallNext) -> CallNext:
    """``handler`` wrapped in ``middleware``, the first one outermost."""
    step = handler
    for mw in reversed(middleware):
        step = _link(mw, call, step)
    return step


def _link(mw: Middleware, call: JobCall, call_next: CallNext) -> CallNext:
    async def run() -> object:
        return await mw(call, call_next)

    return run
