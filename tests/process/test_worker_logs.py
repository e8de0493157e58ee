"""``conveyor worker --log-format json`` writes one JSON object per lifecycle event."""

from __future__ import annotations

import json
import signal

import pytest

from tests.process.app.jobs import Quick, quick
from tests.process.harness import Harness, wait_for

# Real processes on a loaded 2-core machine: more room than the suite-wide 120 s.
pytestmark = [pytest.mark.process, pytest.mark.timeout(300)]


def test_json_log_lines_carry_the_job_fields(harness: Harness) -> None:
    h = harness
    w = h.start_worker("--log-format", "json")
    job = h.queue.enqueue(quick, Quick(n=5), job_id="logged-1")
    h.wait_state(job.id, "completed")

    def completed_line() -> dict[str, object] | None:
        for line in w.log().splitlines():
            body = json.loads(line)  # every line is JSON, not only the lifecycle ones
            if body.get("event") == "completed" and body.get("job_id") == "logged-1":
                return body
        return None

    body = wait_for(completed_line, timeout=10, what="the completed line")
    assert body["job_name"] == quick.name
    assert body["attempt"] == 1 and body["queue"] == "default"
    assert isinstance(body["duration"], float)
    w.send(signal.SIGTERM)
    assert w.wait_exit(15) == 0
