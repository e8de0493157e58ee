"""Job definitions of the process-test app: definitions only, no handlers."""

from __future__ import annotations

from pydantic import BaseModel

from conveyor import job


class Quick(BaseModel):
    n: int


class Slow(BaseModel):
    """Runs until the file ``marker`` exists (then completes), or fails after ``max_seconds``."""

    marker: str
    max_seconds: float = 30.0


class Strict(BaseModel):
    count: int
    label: str


class Spin(BaseModel):
    """Holds the GIL in one C call (``sum(range(n))``) for about as long as ``n`` takes."""

    n: int


quick = job("proc.quick", Quick, result=int)
# Kills the process running it (as a segfault or the OOM killer would).
crash = job("proc.crash", Quick)
spin = job("proc.spin", Spin, result=int, attempts=1)
slow = job("proc.slow", Slow, result=str)
strict = job("proc.strict", Strict, result=str)
# Declared by the ``incomplete`` worker but never given a handler.
orphan = job("proc.orphan", Quick)
# Fired every second by the schedule of tests.process.app.cron_worker.
tick = job("proc.tick", Quick)
