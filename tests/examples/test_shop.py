"""The example service end to end: the API over HTTP (uvicorn), a ``conveyor worker``
process, the SMTP sink and the webhook receiver, on SQLite and on PostgreSQL, driven by the
same scenario ``make example`` runs."""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from examples.shop import jobs
from examples.shop.local.scenario import Outcome, problems, run_scenario
from examples.shop.local.stack import ShopStack

from conveyor import JobState, Queue
from tests.conftest import drop_test_schema, postgres_test_url

pytestmark = [pytest.mark.process, pytest.mark.timeout(180)]


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'shop.db'}"
        return
    url = postgres_test_url(request.getfixturevalue("postgres_base_url"))
    try:
        yield url
    finally:
        drop_test_schema(url)


async def test_the_scenario_runs_end_to_end(database_url: str, tmp_path: Path) -> None:
    with ShopStack(database_url, tmp_path / "shop") as shop:
        async with Queue.from_url(database_url) as queue:
            out = await run_scenario(shop.api_url, shop.sink, shop.receiver, queue)
            audit_jobs = await queue.list_jobs(name=jobs.write_audit.name, limit=1000)
    assert problems(out) == []
    assert_emails_arrived_once(out)
    assert_webhooks(out)
    assert_rolled_back_requests_left_no_job(out, audit_jobs_completed=len(audit_jobs))
    assert out.expired_sessions_gone and out.valid_session_kept
    cleaned = [subject for _, action, subject in out.audit if action == "sessions.cleaned"]
    assert sum(int(subject.split()[0]) for subject in cleaned) == 2, cleaned
    # The worker handed nothing back and exited 0 on SIGTERM; uvicorn ends with the signal it
    # shut down on once it has shut down cleanly.
    assert shop.exit_codes["worker"] == 0, shop.log("worker")
    assert shop.exit_codes["api"] in (0, -signal.SIGTERM), shop.log("api")


def assert_emails_arrived_once(out: Outcome) -> None:
    received = Counter(email.to for email in out.emails)
    assert received == Counter(
        {
            "alice@example.com": 3,
            "bob@example.com": 1,
            "carol@example.com": 1,
            "dave@example.com": 1,
        }
    )
    assert received == out.expected_emails
    assert len({email.message_id for email in out.emails}) == len(out.emails) == 6
    subjects = Counter(email.subject for email in out.emails)
    assert subjects["Reset your password"] == 2  # re-triggered: a new job, a new email


def assert_webhooks(out: Outcome) -> None:
    assert out.webhook_requests, "no webhook was delivered"
    assert all(request.verified for request in out.webhook_requests)
    by_delivery: dict[str, list[tuple[str, int]]] = {}
    for request in out.webhook_requests:
        by_delivery.setdefault(request.delivery_id, []).append((request.endpoint, request.status))
    answers = Counter(tuple(seen) for seen in by_delivery.values())
    # Two orders: the first to three endpoints, the second to the two still active after
    # "gone" answered 410 Gone.
    assert answers == Counter(
        {
            (("ok", 200),): 2,
            (("flaky", 503), ("flaky", 200)): 2,
            (("gone", 410),): 1,
        }
    )
    jobs_by_id = {info.id.removeprefix("webhook:"): info for info in out.webhook_jobs}
    assert set(jobs_by_id) == set(by_delivery)
    for delivery_id, seen in by_delivery.items():
        info = jobs_by_id[delivery_id]
        endpoint = seen[0][0]
        if endpoint == "gone":
            # Permanent: failed at its first attempt, with attempts left it did not use.
            assert info.state is JobState.FAILED and info.attempt == 1
            assert info.max_attempts > 1 and info.error is not None and "410" in info.error
        elif endpoint == "flaky":
            assert info.state is JobState.COMPLETED and info.attempt == 2  # 503, retried
            assert info.result == 200
        else:
            assert info.state is JobState.COMPLETED and info.attempt == 1


def assert_rolled_back_requests_left_no_job(out: Outcome, audit_jobs_completed: int) -> None:
    assert ("POST /invitations carol@example.com again", 409) in out.rejected
    # Two invitations were created, a third rolled back after enqueuing its email and its
    # audit write: neither of its jobs exists, and no email or audit row came of it.
    assert len(out.invite_jobs) == out.invitations_created == 2
    assert all(info.state is JobState.COMPLETED for info in out.invite_jobs)
    actions = Counter(action for _, action, _ in out.audit)
    assert actions["invitation.created"] == 2
    assert [s for _, a, s in out.audit if a == "invitation.created"].count("carol@example.com") == 1
    api_audits = sum(n for action, n in actions.items() if action != "sessions.cleaned")
    assert audit_jobs_completed == api_audits == 11
    assert out.job_counts == {"completed": 21, "failed": 1}
