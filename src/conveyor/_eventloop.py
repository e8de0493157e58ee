"""Running the worker's event loop: on uvloop when it is installed.

uvloop runs the same asyncio code with less CPU per I/O callback, which a worker pays several
times per job (its own round trips and its handlers'). ``CONVEYOR_EVENT_LOOP=asyncio`` keeps the
standard loop, e.g. to debug with asyncio's debug mode.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    if os.environ.get("CONVEYOR_EVENT_LOOP", "auto") != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(main)
    return asyncio.run(main)
