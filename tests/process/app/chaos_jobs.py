"""Job definitions of the chaos test (definitions only; handlers in ``chaos_worker``).

Each handler returns the id of its own execution (``run_id``), so the completed job's result
names the one execution whose completion the queue recorded; every other execution of that job
in the ledger must be explained by a fault.
"""

from __future__ import annotations

from pydantic import BaseModel

from conveyor import job


class Nap(BaseModel):
    """Async: ``await asyncio.sleep(ms / 1000)``."""

    ms: int


class Burn(BaseModel):
    """Sync, CPU-bound: spin for ``ms`` milliseconds in the worker's handler thread."""

    ms: int


nap = job("chaos.nap", Nap, result=str)
burn = job("chaos.burn", Burn, result=str)
