"""``make demo``: a producer enqueues a realistic mix of jobs; two worker processes drain it.

Runs on the embedded SQLite default in ``.demo/``; exits 0 when every job ended where it should
and every side effect happened exactly once.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

from conveyor import JobState, PayloadTooLarge, PayloadValidationError, Queue
from examples.demo import jobs

ROOT = Path(__file__).resolve().parents[2]
WORKDIR = ROOT / ".demo"
UNFINISHED = (JobState.QUEUED, JobState.SCHEDULED, JobState.ACTIVE, JobState.RETRYING)


def prepare() -> dict[str, str]:
    shutil.rmtree(WORKDIR, ignore_errors=True)
    WORKDIR.mkdir()
    effects = WORKDIR / "effects.db"
    with sqlite3.connect(effects) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE effect (kind TEXT, key TEXT, job_id TEXT, attempt INT, pid INT)")
    env = dict(os.environ)
    env["CONVEYOR_URL"] = f"sqlite:///{WORKDIR / 'conveyor.db'}"
    env["DEMO_EFFECTS_DB"] = str(effects)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    os.environ.update(env)
    return env


def start_workers(env: dict[str, str], count: int) -> list[subprocess.Popen[bytes]]:
    procs = []
    for n in range(count):
        log = open(WORKDIR / f"worker-{n + 1}.log", "wb")  # noqa: SIM115 - lives as long as the worker
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "conveyor", "worker", "examples.demo.worker:worker"],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    return procs


async def produce(queue: Queue) -> dict[str, int]:
    """Enqueue the mix; returns what the summary expects to see."""
    rng = random.Random(7)
    expect: Counter[str] = Counter()

    invites = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(500)]
    for i, invitation_id in enumerate(invites):
        payload = jobs.SendInvite(
            invitation_id=invitation_id, to_email=f"guest{i}@example.com", inviter="ada"
        )
        await queue.enqueue(jobs.send_invite, payload, job_id=f"invite-email:{invitation_id}")
    # The API retries a timed-out request: the same job ids again create nothing new.
    duplicates = 0
    for invitation_id in invites[:100]:
        payload = jobs.SendInvite(
            invitation_id=invitation_id, to_email="x@example.com", inviter="ada"
        )
        handle = await queue.enqueue(
            jobs.send_invite, payload, job_id=f"invite-email:{invitation_id}"
        )
        duplicates += handle.duplicate
    expect["duplicates"] = duplicates
    expect["completed"] += 500

    # Reminders go out later: delayed jobs.
    for i in range(50):
        payload = jobs.SendInvite(
            invitation_id=uuid.uuid4(), to_email=f"late{i}@example.com", inviter="grace"
        )
        await queue.enqueue(jobs.send_invite, payload, delay=1.0)
    expect["completed"] += 50

    for user_id in range(1, 301):
        unknown = user_id % 15 == 0  # 20 resets for users that do not exist: fail permanently
        payload = jobs.PasswordReset(
            user_id=user_id + (5000 if unknown else 0), to_email=f"user{user_id}@example.com"
        )
        await queue.enqueue(jobs.password_reset, payload)
        expect["failed" if unknown else "completed"] += 1

    orders = [
        jobs.order_confirmation.request(
            jobs.OrderConfirmation(
                order_id=n, to_email=f"buyer{n}@example.com", total_cents=rng.randint(100, 99999)
            ),
            job_id=f"order-confirmation:{n}",
        )
        for n in range(400)
    ]
    await queue.enqueue_many(orders)
    expect["completed"] += 400

    hooks = []
    for n in range(300):
        flaky = 0
        if n % 5 == 0:
            flaky = 1 + n % 2  # 60 endpoints answer 503 once or twice, then accept
        if n % 30 == 1:
            flaky = 99  # 10 endpoints are down for good: attempts run out
        hooks.append(
            jobs.deliver_webhook.request(
                jobs.WebhookDelivery(
                    endpoint=f"https://hooks.example.com/{n}",  # type: ignore[arg-type]
                    event="order.paid",
                    body={"order": str(n)},
                    flaky_times=flaky,
                )
            )
        )
        expect["failed" if flaky == 99 else "completed"] += 1
    await queue.enqueue_many(hooks)

    audits = [
        jobs.write_audit_log.request(
            jobs.AuditLogWrite(actor="admin", action="export", subject=f"report-{n}")
        )
        for n in range(400)
    ]
    await queue.enqueue_many(audits)
    expect["completed"] += 400

    # Another service enqueues by name with a payload the model rejects: the worker fails it.
    for n in range(5):
        await queue.enqueue_by_name(
            "email.password_reset", {"user_id": "not-a-number", "to_email": f"z{n}@x"}
        )
    expect["failed"] += 5

    # Bad input is refused before anything is written.
    try:
        await queue.enqueue(jobs.send_invite, jobs.PasswordReset(user_id=1, to_email="a@b"))  # type: ignore[arg-type]
    except PayloadValidationError as exc:
        print(f"  refused at enqueue: {exc}")
    try:
        huge = jobs.AuditLogWrite(actor="admin", action="import", subject="x" * 2_000_000)
        await queue.enqueue(jobs.write_audit_log, huge)
    except PayloadTooLarge as exc:
        print(f"  refused at enqueue: {str(exc).split(';')[0]}")
    return dict(expect)


async def watch(queue: Queue, started: float) -> dict[JobState, int]:
    tty = sys.stdout.isatty()
    last_print = 0.0
    while True:
        counts = await queue.counts()
        line = " | ".join(
            f"{state.value} {counts.get(state, 0):>4}"
            for state in (*UNFINISHED, JobState.COMPLETED, JobState.FAILED)
        )
        now = time.monotonic()
        if tty:
            print(f"\r  {now - started:5.1f}s  {line}", end="", flush=True)
        elif now - last_print >= 2:
            print(f"  {now - started:5.1f}s  {line}", flush=True)
            last_print = now
        if not any(counts.get(s, 0) for s in UNFINISHED):
            if tty:
                print()
            return counts
        if now - started > 120:
            raise SystemExit("demo did not finish within 120 s; see .demo/worker-*.log")
        await asyncio.sleep(0.2)


async def summarize(queue: Queue, expect: dict[str, int], elapsed: float) -> bool:
    rows: dict[str, Counter[str]] = {}
    before = None
    while True:
        page = await queue.list_jobs(limit=500, before_seq=before)
        for info in page:
            row = rows.setdefault(info.name, Counter())
            row[info.state.value] += 1
            if info.attempt > 1:
                row["retried"] += 1
        if len(page) < 500:
            break
        before = page[-1].seq
    with sqlite3.connect(os.environ["DEMO_EFFECTS_DB"]) as conn:
        effects = conn.execute("SELECT count(*), count(DISTINCT job_id) FROM effect").fetchone()
        pids = conn.execute("SELECT pid, count(*) FROM effect GROUP BY pid").fetchall()

    total = Counter[str]()
    print(f"\n  {'job':<26}{'completed':>10}{'retried':>9}{'failed':>8}")
    for name in sorted(rows):
        r = rows[name]
        total.update(r)
        print(f"  {name:<26}{r['completed']:>10}{r['retried']:>9}{r['failed']:>8}")
    print(f"  {'total':<26}{total['completed']:>10}{total['retried']:>9}{total['failed']:>8}")
    finished = total["completed"] + total["failed"]
    print(
        f"\n  {finished} jobs in {elapsed:.1f}s: {finished / elapsed:,.0f} jobs/s with 2 worker "
        f"processes (including 1 s delayed jobs and retry backoff)"
    )
    print(f"  duplicate job ids skipped at enqueue: {expect['duplicates']}")
    print(
        f"  side effects: {effects[0]} recorded for {effects[1]} jobs; work split between "
        f"workers: {', '.join(str(n) for _, n in pids)}"
    )
    ok = (
        total["completed"] == expect["completed"]
        and total["failed"] == expect["failed"]
        and effects[0] == effects[1] == expect["completed"]
    )
    print(
        "  OK: every job ended as expected, each side effect happened once"
        if ok
        else f"  MISMATCH: expected {expect}"
    )
    print("  inspect: .venv/bin/conveyor --url sqlite:///.demo/conveyor.db jobs ls --state failed")
    return ok


async def main() -> int:
    env = prepare()
    print("Conveyor demo: SQLite backend, 2 worker processes\n")
    procs = start_workers(env, 2)
    try:
        async with Queue.from_url() as queue:
            started = time.monotonic()
            print("  enqueueing ...")
            expect = await produce(queue)
            await watch(queue, started)
            elapsed = time.monotonic() - started
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            codes = [proc.wait(timeout=30) for proc in procs]
            ok = await summarize(queue, expect, elapsed)
            if any(codes):
                print(f"  workers exited with {codes}; see .demo/worker-*.log")
                return 1
            return 0 if ok else 1
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
