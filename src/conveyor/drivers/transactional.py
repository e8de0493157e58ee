"""Writes that run on the caller's own database connection, inside the caller's transaction.

``enqueue(..., connection=conn)`` must write the job with ``conn`` (so that it exists if and only
if the caller's transaction commits), from sync or async code, with a sqlite3, psycopg or
SQLAlchemy connection. So the store that takes such a write does no I/O itself: it describes the
write as a **plan**, a generator that yields the statements to run one after another and is sent
each one's rows back, and returns its result. An adapter of the caller's connection type runs
the plan (``run_plan`` / ``run_plan_async``), in the caller's thread or coroutine, which is the
only place such a connection may be used.

Two kinds of stores write plans: a SQL driver (SQLite, PostgreSQL) writing into its own tables,
and an outbox, which writes the job into a table of the caller's database for a relay to move to
another backend (Redis).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeAlias, TypeVar, runtime_checkable

from conveyor.drivers.records import InsertResult, NewJob

T = TypeVar("T")

# The SQL dialects a plan is written in. Parameters follow the DB-API paramstyle of the driver
# the caller's connection uses: named ``:name`` for sqlite3, ``%(name)s`` for psycopg.
Dialect: TypeAlias = Literal["sqlite", "postgresql"]
Row: TypeAlias = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Statement:
    sql: str
    params: Mapping[str, Any]


# Yields statements, is sent the rows each returned (empty for statements that return none),
# returns the plan's result.
Plan: TypeAlias = Generator[Statement, list[Row], T]


@runtime_checkable
class TransactionalWriter(Protocol):
    """A store that can insert jobs through the caller's own connection."""

    @property
    def dialect(self) -> Dialect: ...

    def insert_plan(
        self, jobs: Sequence[NewJob], *, now: float | None = None
    ) -> Plan[list[InsertResult]]:
        """The statements that insert ``jobs`` as ``job_insert_many`` would (same duplicates,
        same results), checked before the first statement is yielded. The plan must also make
        sure that the connection reaches this store (the same database file or database and
        schema), and raise :class:`conveyor.InvalidArgument` saying so if it does not."""
        ...


def run_plan(plan: Plan[T], execute: Callable[[Statement], list[Row]]) -> T:
    """Run ``plan`` with a blocking ``execute``. A statement that fails raises its error in the
    plan, which may say in its own words what was wrong."""
    try:
        statement = next(plan)
        while True:
            try:
                rows = execute(statement)
            except Exception as exc:
                statement = plan.throw(exc)
            else:
                statement = plan.send(rows)
    except StopIteration as done:
        result: T = done.value
        return result


async def run_plan_async(plan: Plan[T], execute: Callable[[Statement], Awaitable[list[Row]]]) -> T:
    """Run ``plan`` with an awaitable ``execute``; a failed statement's error is raised in the
    plan, as for :func:`run_plan`."""
    try:
        statement = next(plan)
        while True:
            try:
                rows = await execute(statement)
            except Exception as exc:
                statement = plan.throw(exc)
            else:
                statement = plan.send(rows)
    except StopIteration as done:
        result: T = done.value
        return result
