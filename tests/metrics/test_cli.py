"""``conveyor worker --metrics-port``: a real worker process serves its metrics and probes."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from conveyor.cli import cli
from tests.conftest import redis_test_url
from tests.metrics.app import QUEUE, Work, doomed, flaky, ok
from tests.metrics.scrape import named, probe, samples, value
from tests.process.harness import Harness, wait_for

TARGET = "tests.metrics.app:build"

pytestmark = pytest.mark.process


@pytest.fixture(params=["sqlite", "redis"])
def harness(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Harness]:
    if request.param == "redis":
        url = redis_test_url(request.getfixturevalue("redis_base_url"))
    else:
        url = f"sqlite:///{tmp_path / 'queue.db'}"
    h = Harness(tmp_path, url)
    try:
        yield h
    finally:
        h.kill_all()
        h.queue.close()


def test_the_worker_process_serves_metrics_and_probes(harness: Harness) -> None:
    h = harness
    h.queue.enqueue_many(
        [ok.request(Work(n=i)) for i in range(7)]
        + [flaky.request(Work(n=i)) for i in range(2)]
        + [doomed.request(Work(n=i)) for i in range(3)]
    )
    w = h.start_worker("--metrics-port", "0", "--metrics-host", "127.0.0.1", target=TARGET)
    w.wait_log("serving metrics on")
    found = re.search(r"serving metrics on (http://127\.0\.0\.1:\d+)/metrics", w.log())
    assert found, w.log()
    url = found[1]

    def done() -> bool:
        s = samples(url)
        return (
            value(s, "conveyor_jobs_total", queue=QUEUE, job="metered.ok", outcome="completed") == 7
            and value(
                s, "conveyor_jobs_total", queue=QUEUE, job="metered.flaky", outcome="completed"
            )
            == 2
            and value(s, "conveyor_jobs_total", queue=QUEUE, job="metered.doomed", outcome="failed")
            == 3
        )

    wait_for(done, timeout=30, what=f"the workload counted; log:\n{w.log()}", every=0.1)
    s = samples(url)
    jobs = {(lb["job"], lb["outcome"]): v for lb, v in named(s, "conveyor_jobs_total") if v}
    assert jobs == {
        ("metered.ok", "completed"): 7,
        ("metered.flaky", "retried"): 2,
        ("metered.flaky", "completed"): 2,
        ("metered.doomed", "failed"): 3,
    }

    # The only worker leads: it exports the depth from its first tick on. Whatever states the
    # jobs were in then, the twelve of them are all there.
    def depth() -> float:
        rows = named(samples(url), "conveyor_queue_depth")
        return sum(v for labels, v in rows if labels["queue"] == QUEUE)

    wait_for(lambda: depth() == 12, timeout=30, what="the depth", every=0.2)
    s = samples(url)
    assert value(s, "conveyor_metrics_leader") == 1
    assert value(s, "conveyor_workers", queue=QUEUE) == 1
    status, body = probe(f"{url}/readyz")
    assert status == 200, body
    assert probe(f"{url}/healthz")[0] == 200

    w.send(signal.SIGTERM)
    assert w.wait_exit(timeout=30) == 0, w.log()


def test_the_port_must_be_free(harness: Harness) -> None:
    first = harness.start_worker(
        "--metrics-port", "0", "--metrics-host", "127.0.0.1", target=TARGET
    )
    first.wait_log("serving metrics on")
    found = re.search(r"serving metrics on http://127\.0\.0\.1:(\d+)/metrics", first.log())
    assert found
    done = harness.run_cli(
        "worker", TARGET, "--metrics-port", found[1], "--metrics-host", "127.0.0.1"
    )
    assert done.returncode == 1, done
    assert f"cannot serve metrics on 127.0.0.1:{found[1]}" in done.stderr


def test_importing_conveyor_does_not_import_prometheus_client() -> None:
    code = (
        "import sys, conveyor, conveyor.cli\n"
        "assert 'prometheus_client' not in sys.modules, 'imported'\n"
        "import conveyor.metrics\n"
        "assert 'prometheus_client' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_without_prometheus_client_the_flag_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    for name in [m for m in sys.modules if m.startswith("conveyor.metrics")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'q.db'}"
    result = CliRunner().invoke(cli, ["--url", url, "worker", TARGET, "--metrics-port", "9400"])
    assert result.exit_code == 1, result.output
    assert "pip install 'conveyor[metrics]'" in result.output
