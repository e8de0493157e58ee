"""The scripted scenario: what a day at the shop looks like, driven over HTTP, and what came of
it (emails received, webhooks verified, retried or dead, audit rows)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from conveyor import JobInfo, JobState, Queue
from examples.shop import jobs
from examples.shop.local.smtp_sink import ReceivedEmail, SmtpSink
from examples.shop.local.webhook_receiver import ReceivedRequest, WebhookReceiver

WAIT_TIMEOUT = 60.0
WORK_QUEUES = ("emails", "webhooks", "audit")
WAITING = (JobState.SCHEDULED, JobState.QUEUED, JobState.ACTIVE, JobState.RETRYING)


@dataclass
class Outcome:
    """What the scenario asked for and what happened."""

    expected_emails: Counter[str] = field(default_factory=Counter[str])  # address -> how many
    emails: list[ReceivedEmail] = field(default_factory=list[ReceivedEmail])
    webhook_requests: list[ReceivedRequest] = field(default_factory=list[ReceivedRequest])
    webhook_jobs: list[JobInfo] = field(default_factory=list[JobInfo])
    audit: list[tuple[str, str, str]] = field(default_factory=list[tuple[str, str, str]])
    rejected: list[tuple[str, int]] = field(default_factory=list[tuple[str, int]])
    invite_jobs: list[JobInfo] = field(default_factory=list[JobInfo])
    invitations_created: int = 0
    expired_sessions_gone: bool = False
    valid_session_kept: bool = False
    job_counts: dict[str, int] = field(default_factory=dict[str, int])
    dashboard_status: int = 0  # what GET /jobs/ (the dashboard mounted in the API) answered


async def wait_for(
    what: str, condition: Callable[[], Awaitable[bool]], timeout: float = WAIT_TIMEOUT
) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout}s for {what}")
        await asyncio.sleep(0.1)


async def work_done(queue: Queue) -> bool:
    """No job of the email, webhook and audit queues is waiting or running."""
    for name in WORK_QUEUES:
        counts = await queue.counts(name)
        if any(counts.get(state, 0) for state in WAITING):
            return False
    return True


async def run_scenario(
    api_url: str, sink: SmtpSink, receiver: WebhookReceiver, queue: Queue
) -> Outcome:
    out = Outcome()
    async with httpx.AsyncClient(base_url=api_url, timeout=10) as api:

        async def post(path: str, body: dict[str, object], expect: int) -> dict[str, object]:
            response = await api.post(path, json=body)
            if response.status_code != expect:
                raise AssertionError(f"POST {path} answered {response.status_code}, not {expect}")
            data: dict[str, object] = response.json()
            return data

        # Three customers register webhook endpoints; each receives its signing secret once.
        for name in WebhookReceiver.BEHAVIOURS:
            created = await post("/webhook-endpoints", {"url": receiver.url(name)}, 201)
            with receiver.lock:
                receiver.secrets[name] = str(created["secret"])

        for email in ("alice@example.com", "bob@example.com"):
            await post("/users", {"email": email}, 201)

        async def log_in(email: str, ttl_seconds: int) -> str:
            body: dict[str, object] = {"email": email, "ttl_seconds": ttl_seconds}
            return str((await post("/sessions", body, 201))["token"])

        # Alice's two sessions have expired already: the clean-up schedule will delete them.
        expired = [await log_in("alice@example.com", -60) for _ in range(2)]
        valid = await log_in("bob@example.com", 3600)

        for email in ("carol@example.com", "dave@example.com"):
            await post("/invitations", {"email": email, "inviter": "alice"}, 201)
            out.expected_emails[email] += 1
            out.invitations_created += 1
        # Inviting carol again breaks the unique constraint after the jobs were enqueued: the
        # transaction rolls back, and no email, no audit row is left of it.
        await post("/invitations", {"email": "carol@example.com", "inviter": "bob"}, 409)
        out.rejected.append(("POST /invitations carol@example.com again", 409))

        # Password resets can be asked for again: each request sends a new email.
        for _ in range(2):
            await post("/password-resets", {"email": "alice@example.com"}, 202)
            out.expected_emails["alice@example.com"] += 1
        await post("/password-resets", {"email": "nobody@example.com"}, 404)
        out.rejected.append(("POST /password-resets nobody@example.com", 404))

        # The first order goes to all three endpoints; "gone" answers 410 and is disabled ...
        await post("/orders", {"email": "alice@example.com", "total_cents": 4200}, 201)
        out.expected_emails["alice@example.com"] += 1
        await wait_for("the first order's webhooks", lambda: webhooks_done(queue))
        # ... so the second order goes to the two endpoints still active.
        await post("/orders", {"email": "bob@example.com", "total_cents": 1999}, 201)
        out.expected_emails["bob@example.com"] += 1

        await wait_for("every job to finish", lambda: work_done(queue))

        async def sessions_cleaned() -> bool:
            for token in expired:
                if (await api.get(f"/sessions/{token}")).status_code != 404:
                    return False
            return True

        # Expired sessions are deleted by the clean-up schedule (every second in the example),
        # which writes an audit row saying how many went.
        await wait_for("the expired sessions to be cleaned up", sessions_cleaned)
        out.expired_sessions_gone = True
        kept = await api.get(f"/sessions/{valid}")
        out.valid_session_kept = kept.status_code == 200 and kept.json() == {"valid": True}
        out.dashboard_status = (await api.get("/jobs/")).status_code
        out.audit = [
            (row["actor"], row["action"], row["subject"])
            for row in (await api.get("/audit-log")).json()
        ]

    out.emails = sink.emails
    out.webhook_requests = receiver.requests
    out.webhook_jobs = await queue.list_jobs(name=jobs.deliver_webhook.name, limit=1000)
    out.invite_jobs = await queue.list_jobs(name=jobs.send_invite.name, limit=1000)
    for name in WORK_QUEUES:
        for state, count in (await queue.counts(name)).items():
            if count:
                out.job_counts[state.value] = out.job_counts.get(state.value, 0) + count
    return out


async def webhooks_done(queue: Queue) -> bool:
    counts = await queue.counts("webhooks")
    return not any(counts.get(state, 0) for state in WAITING)


def report(out: Outcome) -> str:
    lines = [f"emails received ({len(out.emails)}):"]
    lines += [
        f"  {e.to:<20} {e.subject}" for e in sorted(out.emails, key=lambda e: (e.to, e.subject))
    ]
    lines.append(f"webhook deliveries ({len(out.webhook_jobs)}):")
    requests_by_delivery: dict[str, list[ReceivedRequest]] = {}
    for request in out.webhook_requests:
        requests_by_delivery.setdefault(request.delivery_id, []).append(request)
    for info in sorted(out.webhook_jobs, key=lambda i: i.seq):
        delivery_id = info.id.removeprefix("webhook:")
        seen = requests_by_delivery.get(delivery_id, [])
        endpoint = seen[0].endpoint if seen else "?"
        answers = " then ".join(str(r.status) for r in seen)
        verified = "signature verified" if seen and all(r.verified for r in seen) else "UNVERIFIED"
        attempts = f"{info.attempt} attempt{'s' if info.attempt != 1 else ''}"
        lines.append(
            f"  /hooks/{endpoint:<6} answered {answers:<12} {verified}, "
            f"{info.state.value} after {attempts}"
        )
    lines.append("rolled back or refused (no job left behind):")
    lines += [f"  {what} -> {status}" for what, status in out.rejected]
    lines.append(
        f"  invitation emails enqueued: {len(out.invite_jobs)} "
        f"(for {out.invitations_created} invitations created)"
    )
    cleaned = sum(int(s.split()[0]) for _, a, s in out.audit if a == "sessions.cleaned")
    lines.append(
        f"sessions: {cleaned} expired cleaned up by {jobs.clean_expired_sessions.name}, "
        f"valid one kept: {out.valid_session_kept}"
    )
    # The clean-up's own rows are left out: how many runs it took depends on the clock.
    by_action = Counter(action for _, action, _ in out.audit if action != "sessions.cleaned")
    lines.append(f"audit rows written for requests ({sum(by_action.values())}):")
    lines += [f"  {action:<28} x{count}" for action, count in sorted(by_action.items())]
    counts = ", ".join(f"{state} {n}" for state, n in sorted(out.job_counts.items()))
    lines.append(f"jobs (emails, webhooks, audit): {counts}")
    lines.append(f"dashboard: GET /jobs/ answered {out.dashboard_status}")
    return "\n".join(lines)


def problems(out: Outcome) -> list[str]:
    """What is wrong with the outcome (nothing, when the shop works)."""
    found: list[str] = []
    received = Counter(e.to for e in out.emails)
    if received != out.expected_emails:
        found.append(f"emails received {dict(received)}, expected {dict(out.expected_emails)}")
    if len({e.message_id for e in out.emails}) != len(out.emails):
        found.append("an email arrived twice")
    if not all(r.verified for r in out.webhook_requests):
        found.append("a webhook delivery did not verify")
    for info in out.webhook_jobs:
        want = JobState.FAILED if info.error and "410" in info.error else JobState.COMPLETED
        if info.state is not want:
            found.append(f"webhook job {info.id} ended {info.state.value}")
    if len(out.invite_jobs) != out.invitations_created:
        found.append(f"{len(out.invite_jobs)} invitation jobs for {out.invitations_created} rows")
    if not (out.expired_sessions_gone and out.valid_session_kept):
        found.append("the session clean-up removed the wrong sessions")
    if out.dashboard_status != 200:
        found.append(f"the dashboard answered {out.dashboard_status}")
    return found
