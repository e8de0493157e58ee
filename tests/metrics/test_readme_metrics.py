"""The README's "Metrics and health" snippet runs as written: ``python -m app.monitored``
serves the tour's worker's metrics and probes."""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.metrics.scrape import probe, samples, value
from tests.process.harness import wait_for
from tests.test_readme import README, app_dir, run

__all__ = ["app_dir"]  # the fixture, shared with the tour's own tests

pytestmark = pytest.mark.process


def test_the_metrics_snippet_serves_the_tours_worker(app_dir: tuple[Path, dict[str, str]]) -> None:
    cwd, env = app_dir
    assert "# app/monitored.py" in README.read_text()
    out = cwd / "monitored.out"
    with out.open("wb") as sink:
        # Port 0: any free one (the snippet's default, 9400, may be taken on a test machine).
        process = subprocess.Popen(
            [sys.executable, "-m", "app.monitored", "0"],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        found = wait_for(
            lambda: re.search(r"metrics on (http://127\.0\.0\.1:\d+)/metrics", out.read_text()),
            timeout=30,
            what="the metrics URL",
        )
        url = found[1]
        script = (
            "import asyncio; from app.api import invite; "
            "print(asyncio.run(invite('m@example.com')))"
        )
        run(f"python -c {shlex.quote(script)}", cwd, env)
        wait_for(
            lambda: (
                value(
                    samples(url),
                    "conveyor_jobs_total",
                    queue="emails",
                    job="email.send_invite",
                    outcome="completed",
                )
                == 1
            ),
            timeout=30,
            what=f"the job counted; output:\n{out.read_text()}",
            every=0.1,
        )
        status, body = probe(f"{url}/readyz")
        assert status == 200, body
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, out.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
