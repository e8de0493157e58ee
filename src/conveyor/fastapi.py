"""Conveyor in a FastAPI or Starlette app: one queue, opened with the app and closed with it.

.. code-block:: python

    queue = Queue.from_url(os.environ.get("CONVEYOR_URL"))
    app = FastAPI(lifespan=conveyor_lifespan(queue))

    @app.post("/invitations")
    async def invite(body: Invite, queue: QueueDep) -> dict[str, str]:
        handle = await queue.enqueue(send_invite, SendInvite(...))
        return {"job_id": handle.id}

:func:`conveyor_lifespan` connects the queue before the app serves its first request (so a
backend that is down fails the start, not the first request) and closes it when the server
stops, after the app's own lifespan, which it may wrap. :func:`get_queue` hands the queue to an
endpoint; ``QueueDep`` is that as a FastAPI dependency. Only ``QueueDep`` needs FastAPI: plain
Starlette apps use the lifespan and ``get_queue(request)`` with the ``conveyor[fastapi]`` extra
alone.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, overload

from starlette.applications import Starlette
from starlette.requests import HTTPConnection

from conveyor._errors import ConveyorError
from conveyor._queue import Queue

if TYPE_CHECKING:
    from fastapi import Depends

STATE_ATTRIBUTE = "conveyor_queue"
"""The attribute of ``app.state`` the lifespan stores the queue under."""

AppT = TypeVar("AppT", bound=Starlette)


class QueueNotConfigured(ConveyorError, RuntimeError):
    """An endpoint asked for the queue of an app whose lifespan is not ``conveyor_lifespan``."""


@overload
def conveyor_lifespan(
    queue: Queue, inner: None = None
) -> Callable[[Starlette], AbstractAsyncContextManager[None]]: ...


@overload
def conveyor_lifespan(
    queue: Queue, inner: Callable[[AppT], AbstractAsyncContextManager[None]]
) -> Callable[[AppT], AbstractAsyncContextManager[None]]: ...


@overload
def conveyor_lifespan(
    queue: Queue, inner: Callable[[AppT], AbstractAsyncContextManager[Mapping[str, Any]]]
) -> Callable[[AppT], AbstractAsyncContextManager[Mapping[str, Any]]]: ...


def conveyor_lifespan(
    queue: Queue,
    inner: Callable[[Any], AbstractAsyncContextManager[Mapping[str, Any] | None]] | None = None,
) -> Callable[[Any], AbstractAsyncContextManager[Any]]:
    """A lifespan for ``FastAPI(lifespan=...)`` or ``Starlette(lifespan=...)`` that connects
    ``queue`` at startup, stores it on ``app.state`` for :func:`get_queue`, and closes it at
    shutdown.

    ``inner``: the app's own lifespan, run inside this one: it starts after the queue is open
    (its startup may enqueue) and ends before the queue closes. Whatever it yields (a state
    mapping or nothing) is yielded on. The queue is closed however the inner lifespan ends,
    an exception at its startup or shutdown included.
    """

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncGenerator[Mapping[str, Any] | None]:
        await queue.connect()
        setattr(app.state, STATE_ATTRIBUTE, queue)
        try:
            if inner is None:
                yield None
            else:
                async with inner(app) as state:
                    yield state
        finally:
            await queue.close()

    return lifespan


def get_queue(connection: HTTPConnection) -> Queue:
    """The queue :func:`conveyor_lifespan` opened for the app serving this request (or
    websocket). Raises :class:`QueueNotConfigured` when the app has no such lifespan, or
    its lifespan did not run (a test client used without its ``with`` block)."""
    queue: object = getattr(connection.app.state, STATE_ATTRIBUTE, None)
    if not isinstance(queue, Queue):
        raise QueueNotConfigured(
            "this app has no Conveyor queue: create it with "
            "FastAPI(lifespan=conveyor_lifespan(queue)) (or Starlette(lifespan=...)), and make "
            "sure the server runs the lifespan (uvicorn does by default; a TestClient only "
            "inside `with TestClient(app) as client:`)"
        )
    return queue


if TYPE_CHECKING:
    QueueDep = Annotated[Queue, Depends(get_queue)]
    """An endpoint parameter ``queue: QueueDep`` receives the app's queue (FastAPI)."""


def __getattr__(name: str) -> Any:
    # QueueDep is built on first use, so that importing this module never imports FastAPI
    # (plain Starlette apps have no FastAPI; FastAPI apps pay for its import once anyway).
    if name != "QueueDep":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        from fastapi import Depends
    except ImportError as exc:
        raise ImportError(
            f"conveyor.fastapi.QueueDep needs FastAPI ({exc}): pip install fastapi; without "
            "it, call get_queue(request) in the endpoint"
        ) from exc
    dependency = Annotated[Queue, Depends(get_queue)]
    globals()["QueueDep"] = dependency
    return dependency


__all__ = [
    "STATE_ATTRIBUTE",
    "QueueDep",
    "QueueNotConfigured",
    "conveyor_lifespan",
    "get_queue",
]
