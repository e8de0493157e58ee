"""conveyor.testing as its users use it: a conftest that names the plugin, and test files that
take its fixtures, run by pytest itself (pytester)."""

from __future__ import annotations

import pytest

CONFTEST = 'pytest_plugins = ["conveyor.testing"]\n'
ASYNC_INI = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
"""
# In-process runs import the plugin this process imported already (for tests/testing).
IN_PROCESS = ("-q", "-W", "ignore::pytest.PytestAssertRewriteWarning")

JOBS = """
from pydantic import BaseModel
from conveyor import Fixed, JobContext, Permanent, Queue, Worker, job

class SendInvite(BaseModel):
    to_email: str

send_invite = job("email.send_invite", SendInvite, result=str, attempts=3, backoff=Fixed(30))

# The application's worker, bound to its production queue: tests never touch that one.
worker = Worker(Queue.from_url("sqlite:///never-opened-by-the-tests.db"))
sent: list[str] = []

@worker.handles(send_invite)
async def handle_send_invite(payload: SendInvite, ctx: JobContext) -> str:
    if payload.to_email.endswith("@flaky.example") and ctx.attempt == 1:
        raise RuntimeError("SMTP server busy")
    if payload.to_email.endswith("@invalid.example"):
        raise Permanent("no such domain")
    sent.append(payload.to_email)
    return f"sent to {payload.to_email}"
"""

TESTS = """
import pytest
from jobs import SendInvite, handle_send_invite, send_invite, sent, worker
from conveyor import JobState, PayloadValidationError
from conveyor.testing import assert_enqueued, make_context, run_until_idle

async def test_enqueue_then_run(conveyor_queue):
    await conveyor_queue.enqueue(send_invite, SendInvite(to_email="ada@example.com"))
    [info] = assert_enqueued(conveyor_queue, send_invite, SendInvite(to_email="ada@example.com"))
    assert info.state is JobState.QUEUED
    report = await run_until_idle(conveyor_queue, worker)
    assert report.states == {info.id: JobState.COMPLETED}
    assert sent == ["ada@example.com"]

async def test_retry_waits_for_the_clock(conveyor_queue, conveyor_clock):
    handle = await conveyor_queue.enqueue(send_invite, SendInvite(to_email="bob@flaky.example"))
    report = await run_until_idle(conveyor_queue, worker)
    assert report.states == {handle.id: JobState.RETRYING}
    conveyor_clock.advance(30)
    report = await run_until_idle(conveyor_queue, worker)
    assert report.states == {handle.id: JobState.COMPLETED}
    assert await handle.result(timeout=1) == "sent to bob@flaky.example"

async def test_permanent_failure(conveyor_queue):
    await conveyor_queue.enqueue(send_invite, SendInvite(to_email="eve@invalid.example"))
    report = await run_until_idle(conveyor_queue, worker)
    [failed] = report.failed
    assert "no such domain" in failed.error

async def test_the_handler_alone():
    ctx = make_context(send_invite, attempt=2)
    assert await handle_send_invite(SendInvite(to_email="x@example.com"), ctx) == (
        "sent to x@example.com"
    )

def test_sync_code_enqueues(conveyor_sync_queue):
    conveyor_sync_queue.enqueue(send_invite, SendInvite(to_email="a@example.com"))
    assert_enqueued(conveyor_sync_queue, send_invite, {"to_email": "a@example.com"}, count=1)

def test_invalid_payloads_are_refused(conveyor_sync_queue):
    with pytest.raises(PayloadValidationError):
        conveyor_sync_queue.enqueue(send_invite, SendInvite.model_construct(to_email=5))

def test_nothing_was_enqueued(conveyor_sync_queue):
    assert_enqueued(conveyor_sync_queue, send_invite)
"""


def test_a_user_test_file_runs_with_the_plugin(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(jobs=JOBS, test_jobs=TESTS)
    pytester.makeini(ASYNC_INI)
    result = pytester.runpytest_subprocess("-q")
    result.assert_outcomes(passed=6, failed=1)
    # The one failure says what was expected, and that nothing was enqueued at all.
    result.stdout.fnmatch_lines(
        [
            "*expected at least 1 job 'email.send_invite' enqueued, found 0",
            "*nothing was enqueued",
        ]
    )
    assert not (pytester.path / "never-opened-by-the-tests.db").exists()


def test_the_sync_fixtures_need_no_asyncio_plugin(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        jobs=JOBS,
        test_sync="""
import pytest
from jobs import SendInvite, send_invite
from conveyor.testing import assert_enqueued

def test_enqueue(conveyor_sync_queue, conveyor_clock):
    conveyor_sync_queue.enqueue(send_invite, SendInvite(to_email="a@example.com"), delay=60)
    [info] = assert_enqueued(conveyor_sync_queue, send_invite)
    assert info.run_at.timestamp() == pytest.approx(conveyor_clock.now() + 60)
""",
    )
    result = pytester.runpytest_inprocess("-p", "no:asyncio", *IN_PROCESS)
    result.assert_outcomes(passed=1)


def test_the_plugin_is_not_loaded_unless_named(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_unnamed="""
def test_uses_the_queue(conveyor_queue):
    pass
"""
    )
    pytester.makeini(ASYNC_INI)
    result = pytester.runpytest_inprocess(*IN_PROCESS)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'conveyor_queue' not found*"])
