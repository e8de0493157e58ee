"""Conveyor in a Flask app: one :class:`~conveyor.SyncQueue` per process.

.. code-block:: python

    conveyor = Conveyor()            # at module level; or Conveyor(app)

    def create_app() -> Flask:
        app = Flask(__name__)
        app.config["CONVEYOR_URL"] = os.environ["CONVEYOR_URL"]
        conveyor.init_app(app)
        return app

    @bp.post("/invitations")
    def invite():
        handle = conveyor.queue.enqueue(send_invite, SendInvite(...))
        return {"job_id": handle.id}

A ``SyncQueue`` owns an event-loop thread and a connection, neither of which survives a
``fork``: a server that forks its workers after the app was loaded (gunicorn ``--preload``,
uWSGI) would leave each child a queue whose thread does not exist. So the queue is made on
first use in each process, a forked child gets a new one (the parent's is left to the
parent), and each process closes its own when it exits (or at :meth:`Conveyor.close`).
"""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from collections.abc import Mapping
from typing import Any, cast

from flask import Flask, current_app

from conveyor._sync import SyncQueue
from conveyor.backends.registry import configured_url

EXTENSION_KEY = "conveyor"
"""The key of ``app.extensions`` the extension registers under."""
CONFIG_KEY = "CONVEYOR_URL"


class Conveyor:
    """The Flask extension: ``Conveyor(app)``, or ``Conveyor()`` then ``init_app(app)``.

    The backend's URL: ``app.config["CONVEYOR_URL"]``, else ``url``, else ``$CONVEYOR_URL``,
    else ``$REDIS_URL``, else ``sqlite:///conveyor.db``. ``queue_options`` go to
    :meth:`Queue.from_url <conveyor.Queue.from_url>` (``max_payload_bytes=``, ...).
    """

    def __init__(
        self, app: Flask | None = None, *, url: str | None = None, **queue_options: Any
    ) -> None:
        self._given_url = url
        self._app_url: str | None = None
        self._options = queue_options
        self._lock = threading.Lock()
        self._queue: SyncQueue | None = None
        self._pid: int | None = None
        _instances.add(self)
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Read the app's ``CONVEYOR_URL`` and register as ``app.extensions["conveyor"]``.
        Nothing connects yet: the first use of :attr:`queue` does, in the process that uses
        it."""
        config = cast("Mapping[str, object]", app.config)  # a dict without type arguments
        url = config.get(CONFIG_KEY)
        if url is not None and not isinstance(url, str):
            raise TypeError(f"app.config[{CONFIG_KEY!r}] must be a str, got {url!r}")
        if url and self._app_url and url != self._app_url:
            raise ValueError(
                f"this Conveyor extension already serves an app on another URL; create one "
                f"Conveyor() per backend (got {CONFIG_KEY}={url!r})"
            )
        self._app_url = url or self._app_url
        app.extensions[EXTENSION_KEY] = self

    @property
    def url(self) -> str:
        """The URL the queue is (or will be) opened on."""
        return configured_url(self._app_url or self._given_url)

    @property
    def queue(self) -> SyncQueue:
        """This process's queue, made on first use; usable from any thread."""
        pid = os.getpid()
        with self._lock:
            if self._queue is None or self._pid != pid:
                # Not the parent's queue after a fork (whose thread does not exist here):
                # that one belongs to the parent, which closes it.
                self._queue = SyncQueue.from_url(self.url, **self._options)
                self._pid = pid
            return self._queue

    def close(self) -> None:
        """Close this process's queue (its thread and connection); the next use of
        :attr:`queue` opens a new one. Called at exit; idempotent."""
        with self._lock:
            queue, owned = self._queue, self._pid == os.getpid()
            self._queue = None
            self._pid = None
        if queue is not None and owned:
            queue.close()

    def _forgotten_by_fork(self) -> None:
        # In a forked child: the lock may have been held by a thread that does not exist
        # here, and the queue is the parent's.
        self._lock = threading.Lock()
        self._queue = None
        self._pid = None


def current_queue() -> SyncQueue:
    """The queue of the current Flask app's extension (in a request or app context)."""
    extension = current_app.extensions.get(EXTENSION_KEY)
    if not isinstance(extension, Conveyor):
        raise RuntimeError(
            "the current Flask app has no Conveyor extension: Conveyor(app) or "
            "conveyor.init_app(app)"
        )
    return extension.queue


# Every live extension, so that one exit handler and one fork handler serve them all (and an
# extension that is dropped is not kept alive by them).
_instances: weakref.WeakSet[Conveyor] = weakref.WeakSet()


def _close_all() -> None:
    for extension in list(_instances):
        extension.close()


def _after_fork_in_child() -> None:
    for extension in list(_instances):
        extension._forgotten_by_fork()  # pyright: ignore[reportPrivateUsage]


atexit.register(_close_all)
os.register_at_fork(after_in_child=_after_fork_in_child)

__all__ = ["CONFIG_KEY", "EXTENSION_KEY", "Conveyor", "current_queue"]
