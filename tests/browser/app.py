"""The jobs and the worker the browser tests watch; run as a real worker process with
``conveyor --url sqlite:///... worker tests.browser.app:worker``.

``flaky`` fails while its marker file is absent and has a single attempt, so a run without the
marker leaves it failed, and a retry once the marker exists completes it.
"""

from __future__ import annotations

import os

from pydantic import BaseModel, SecretStr

from conveyor import JobContext, Queue, Retention, Worker, WorkerConfig, job


class Flaky(BaseModel):
    marker: str


class Note(BaseModel):
    text: str


class Login(BaseModel):
    user: str
    password: SecretStr


class Report(BaseModel):
    month: str


flaky = job("billing.charge", Flaky, result=str, queue="billing", attempts=1)
note = job("emails.send", Note, result=str, queue="emails", attempts=1)
login = job("auth.check_login", Login, queue="emails", attempts=1)
report = job("reports.monthly", Report, result=str, queue="reports", attempts=1)

CONFIG = WorkerConfig(
    concurrency=4,
    lease_seconds=5.0,
    maintenance_interval=0.2,
    heartbeat_interval=0.5,
    poll_interval=0.05,
    retention=Retention(completed_max_count=None),
)

queue = Queue.from_url()
worker = Worker(queue, config=CONFIG, jobs=[flaky, note, login, report])


@worker.handles(flaky)
def charge(payload: Flaky, ctx: JobContext) -> str:
    if not os.path.exists(payload.marker):
        raise RuntimeError(f"card declined: marker {payload.marker} is missing")
    return "charged"


@worker.handles(note)
async def send(payload: Note, ctx: JobContext) -> str:
    if payload.text.startswith("bounce"):
        raise ConnectionError(f"mail server refused {payload.text!r}")
    return f"sent {len(payload.text)} characters"


@worker.handles(login)
async def check_login(payload: Login, ctx: JobContext) -> None:
    return None


@worker.handles(report)
async def monthly(payload: Report, ctx: JobContext) -> str:
    return f"report of {payload.month}"
