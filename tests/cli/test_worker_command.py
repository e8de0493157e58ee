"""``conveyor worker`` maps its flags onto the worker it loads."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner

from conveyor import JobState, Queue
from conveyor.cli import cli

APP = """
from pydantic import BaseModel
from conveyor import JobContext, Queue, Worker, WorkerConfig, job

class Num(BaseModel):
    n: int

tally = job("cli.tally", Num, result=int)
seen = []
worker = Worker(Queue.from_url(), config=WorkerConfig(poll_interval=0.05))

@worker.handles(tally)
async def handle(payload: Num, ctx: JobContext) -> int:
    seen.append((ctx.queue, payload.n))
    return payload.n
"""


def test_queue_concurrency_and_burst_flags_reach_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cliapp.py").write_text(APP)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'flags.db'}"
    import cliapp  # type: ignore[import-not-found]

    async def seed() -> None:
        async with Queue.from_url(url) as q:
            await q.enqueue(cliapp.tally, cliapp.Num(n=1), queue="reports", job_id="r")
            await q.enqueue(cliapp.tally, cliapp.Num(n=2), job_id="d")

    asyncio.run(seed())
    # The module built its Queue before --url was given; point it at the test's file.
    cliapp.worker.queue = Queue.from_url(url)
    out = CliRunner().invoke(
        cli,
        ["worker", "cliapp:worker", "--queue", "reports", "-c", "3", "--prefetch", "7", "--burst"],
    )
    assert out.exit_code == 0, out.output
    assert cliapp.seen == [("reports", 1)]  # only the named queue was served
    assert cliapp.worker.config.concurrency == 3
    assert cliapp.worker.config.prefetch == 7
    assert cliapp.worker.config.queues == ("reports",)

    async def states() -> dict[str, JobState]:
        async with Queue.from_url(url) as q:
            return {i.id: i.state for i in await q.list_jobs()}

    assert asyncio.run(states()) == {"r": JobState.COMPLETED, "d": JobState.QUEUED}


@pytest.mark.parametrize("value", ["lots", "-1", "1.5", "Auto"])
def test_a_bad_prefetch_is_refused_naming_it(value: str) -> None:
    out = CliRunner().invoke(cli, ["worker", "nowhere:worker", f"--prefetch={value}"])
    assert out.exit_code == 2
    assert "--prefetch" in out.output
    assert f"expected 'auto' or a whole number >= 0, got {value!r}" in out.output


def test_a_queue_none_of_the_definitions_use_is_warned_about(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--queue webhook`` for ``webhooks``: the worker would sit idle forever; it says why."""
    (tmp_path / "typoapp.py").write_text(
        APP.replace('"cli.tally", Num', '"cli.tally", Num, queue="webhooks"')
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    import typoapp  # type: ignore[import-not-found]

    typoapp.worker.queue = Queue.from_url(f"sqlite:///{tmp_path / 'typo.db'}")
    out = CliRunner().invoke(cli, ["worker", "typoapp:worker", "--queue", "webhook", "--burst"])
    assert out.exit_code == 0, out.output
    assert (
        "queue 'webhook' is served by this worker but none of its job definitions use it "
        "(they use: webhooks); is it misspelt?"
    ) in out.output


GC_APP = """
import gc
from pydantic import BaseModel
from conveyor import JobContext, Queue, Worker, WorkerConfig, job

class Num(BaseModel):
    n: int

probe = job("cli.gc_probe", Num, result=int)
seen = []
worker = Worker(Queue.from_url(), config=WorkerConfig(poll_interval=0.05{config}))

@worker.handles(probe)
async def handle(payload: Num, ctx: JobContext) -> int:
    seen.append((gc.get_threshold()[0], gc.get_freeze_count() > 0))
    return payload.n
"""


@pytest.mark.parametrize(
    ("module", "config", "flags", "expected"),
    [
        ("gcdefault", "", [], (20_000, True)),
        ("gcoff", "", ["--gc-threshold", "0"], None),
        ("gcflag", "", ["--gc-threshold", "5000"], (5_000, True)),
        ("gcapp", ", gc_threshold=9000", [], (9_000, True)),
    ],
)
def test_the_worker_command_tunes_the_collector_while_it_runs(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    module: str,
    config: str,
    flags: list[str],
    expected: tuple[int, bool] | None,
) -> None:
    """By default the collector's first threshold is raised and the objects that exist at start
    are frozen while the worker runs; ``--gc-threshold 0`` leaves it alone; an application's own
    ``WorkerConfig(gc_threshold=)`` wins over the command's default. Afterwards the process's
    settings are back."""
    import gc

    (tmp_path / f"{module}.py").write_text(GC_APP.format(config=config))
    monkeypatch.syspath_prepend(str(tmp_path))
    app = __import__(module)
    url = f"sqlite:///{tmp_path / 'gc.db'}"

    async def seed() -> None:
        async with Queue.from_url(url) as q:
            await q.enqueue(app.probe, app.Num(n=1))

    asyncio.run(seed())
    app.worker.queue = Queue.from_url(url)
    before = gc.get_threshold()
    out = CliRunner().invoke(cli, ["worker", f"{module}:worker", "--burst", *flags])
    assert out.exit_code == 0, out.output
    assert app.seen == [expected or (before[0], False)]
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
