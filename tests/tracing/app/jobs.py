"""The jobs of the traced worker app (importable without configuring its tracer provider)."""

from __future__ import annotations

from pydantic import BaseModel

from conveyor import Fixed, job

ENV = "CONVEYOR_TEST_SPANS"  # the file the worker app writes its spans to


class Num(BaseModel):
    n: int


echo = job("traced.echo", Num, result=int, queue="traced")
flaky = job("traced.flaky", Num, result=int, queue="traced", attempts=3, backoff=Fixed(0))
