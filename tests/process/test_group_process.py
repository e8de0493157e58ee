"""Serial per key across real worker processes: three processes of two slots each run the jobs
of four accounts with ``group_concurrency=1``. From the ledger of handler starts and ends, no
two jobs of one account ever overlapped, whichever processes ran them; jobs of different
accounts did run side by side; and each account's jobs ran in the order they were enqueued."""

from __future__ import annotations

import itertools
from collections import defaultdict

import pytest

from tests.process.app.group_worker import Posting, post
from tests.process.harness import Harness, wait_for

pytestmark = [pytest.mark.process, pytest.mark.timeout(300)]

ACCOUNTS = 4
PER_ACCOUNT = 15
PROCESSES = 3


def test_one_account_runs_one_job_at_a_time_across_processes(harness: Harness) -> None:
    h = harness
    # Two slots each: no process can hold all four accounts at once, so the others get their
    # turns however the processes are scheduled (with four, one fast process could run it all).
    workers = [
        h.start_worker("-c", "2", target="tests.process.app.group_worker:worker")
        for _ in range(PROCESSES)
    ]
    for w in workers:
        w.wait_log("worker started", timeout=60)
    ids = [f"acct{a}-{n:03d}" for n in range(PER_ACCOUNT) for a in range(ACCOUNTS)]
    h.queue.enqueue_many(
        [
            post.request(Posting(account=f"acct{job_id[4]}", n=int(job_id[-3:])), job_id=job_id)
            for job_id in ids
        ]
    )
    total = len(ids)
    wait_for(
        lambda: h.counts().get("completed", 0) == total,
        timeout=120,
        what=f"{total} jobs to complete",
        every=0.2,
    )
    events = h.events()
    spans: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
    starts = {e["job_id"]: e for e in events if e["event"] == "start"}
    assert sorted(starts) == sorted(ids), "each job started once"
    for e in events:
        if e["event"] == "end":
            start = starts[e["job_id"]]
            spans[e["job_id"][:5]].append((start["at"], e["at"], start["pid"]))
    pids: set[int] = set()
    for account, mine in spans.items():
        mine.sort()
        assert len(mine) == PER_ACCOUNT
        for (_, end, _), (begin, _, _) in itertools.pairwise(mine):
            assert begin >= end, f"two jobs of {account} overlapped: {mine}"
        pids.update(pid for *_, pid in mine)
        order = [e["job_id"] for e in sorted(starts.values(), key=lambda e: e["at"])]
        assert [i for i in order if i.startswith(account)] == sorted(
            i for i in ids if i.startswith(account)
        )
    assert len(pids) > 1, "the accounts' jobs should be spread over the processes"
    # Accounts ran side by side: some moment had more than one account's job running.
    every = sorted((begin, end) for mine in spans.values() for begin, end, _ in mine)
    assert any(b < prev_end for (_, prev_end), (b, _) in itertools.pairwise(every))
    for w in workers:
        assert w.alive(), w.log()
    assert h.store_problems() == []
