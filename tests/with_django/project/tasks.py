"""Django tasks of the test project (imported once Django's settings are configured)."""

from __future__ import annotations

import asyncio

from django.tasks import TaskContext, task

# What tasks ran in this process, in order: the worker of these tests runs in the test process.
ran: list[str] = []


@task
def add(a: int, b: int) -> int:
    ran.append(f"add:{a}+{b}")
    return a + b


@task(queue_name="emails")
def send_email(to: str) -> str:
    ran.append(f"email:{to}")
    return f"sent to {to}"


@task
def record(label: str) -> None:
    ran.append(label)


@task
async def async_double(n: int) -> int:
    await asyncio.sleep(0)
    ran.append(f"double:{n}")
    return n * 2


@task
def explode(message: str) -> None:
    raise LookupError(message)


@task(takes_context=True)
def whoami(context: TaskContext) -> dict[str, object]:
    return {"id": context.task_result.id, "attempt": context.attempt}


@task
def store(email: str) -> int:
    """Writes with Django's ORM connection from the worker, to the file that holds the queue."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO signup (email) VALUES (%s)", [email])
        cursor.execute("SELECT count(*) FROM signup")
        (count,) = cursor.fetchone()
    return int(count)


@task(backend="pg")
def pg_add(a: int, b: int) -> int:
    return a + b
