"""The README's tracing snippet runs as written: the tour's invite, enqueued inside a span with
the snippet's console exporter configured, shows a ``send emails`` span and a linked ``process
emails`` span of the same trace."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.test_readme import FILE_BLOCK, README

SCRIPT = """
import asyncio, dataclasses
from app import tracing  # first: configures OpenTelemetry
from opentelemetry import trace
from app import api, worker

async def main():
    with trace.get_tracer("signup").start_as_current_span("POST /signup"):
        job_id = await api.invite("ada@example.com")
    worker.worker.config = dataclasses.replace(worker.worker.config, burst=True)
    await worker.worker.run()
    info = await api.queue.get(job_id)
    assert info is not None and info.state.value == "completed", info
    await api.queue.close()

asyncio.run(main())
tracing.provider.force_flush()
"""


def printed_spans(stdout: str) -> list[dict[str, Any]]:
    """The JSON objects the console exporter printed (each from a ``{`` line to a ``}`` line)."""
    spans: list[dict[str, Any]] = []
    block: list[str] = []
    for line in stdout.splitlines():
        if line == "{":
            block = [line]
        elif block:
            block.append(line)
            if line == "}":
                spans.append(json.loads("\n".join(block)))
                block = []
    return spans


def test_the_tracing_snippet(tmp_path: Path) -> None:
    files = FILE_BLOCK.findall(README.read_text())
    assert "app/tracing.py" in {name for name, _ in files}
    (tmp_path / "app").mkdir()
    for name, code in files:
        (tmp_path / name).write_text(code)
    env = {k: v for k, v in os.environ.items() if k not in ("CONVEYOR_URL", "REDIS_URL")}
    env["CONVEYOR_URL"] = "memory://tour"  # one process: the API's queue and the worker's
    env["PYTHONPATH"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{shlex.quote(SCRIPT)}\n{done.stdout}\n{done.stderr}"
    by_name = {span["name"]: span for span in printed_spans(done.stdout)}
    send, process = by_name["send emails"], by_name["process emails"]
    assert send["kind"] == "SpanKind.PRODUCER" and process["kind"] == "SpanKind.CONSUMER"
    assert send["parent_id"] == by_name["POST /signup"]["context"]["span_id"]
    assert [link["context"]["span_id"] for link in process["links"]] == [send["context"]["span_id"]]
    assert process["context"]["trace_id"] == send["context"]["trace_id"]
    assert process["attributes"]["conveyor.job.outcome"] == "returned"
