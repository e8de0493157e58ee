"""The job ids Conveyor makes: 16 URL-safe characters, distinct, never read as an option."""

from __future__ import annotations

import os
import re
import threading

from conveyor._ids import POOL_IDS, new_job_ids


def test_made_ids_are_sixteen_url_safe_characters_and_never_begin_with_a_dash() -> None:
    # Without the rule, 20,000 ids hold one that begins with "-" but for a chance of ~1e-137.
    ids = new_job_ids(20_000)
    assert len(set(ids)) == 20_000
    assert all(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{15}", job_id) for job_id in ids)


def test_one_id_at_a_time_follows_the_same_rule() -> None:
    ids = [new_job_ids(1)[0] for _ in range(5_000)]
    assert not [job_id for job_id in ids if job_id.startswith("-")]


def test_a_forked_child_never_hands_out_the_ids_its_parent_will() -> None:
    new_job_ids(1)  # the pool holds ids to come
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, then out without running anything of the parent's
        os.write(write, "".join(new_job_ids(1) + new_job_ids(3)).encode())
        os._exit(0)
    os.close(write)
    try:
        child = b""
        while chunk := os.read(read, 4096):
            child += chunk
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    ours = "".join(new_job_ids(1) + new_job_ids(3))
    assert len(child) == len(ours) == 64
    child_ids = {child[i : i + 16].decode() for i in range(0, 64, 16)}
    our_ids = {ours[i : i + 16] for i in range(0, 64, 16)}
    assert not child_ids & our_ids


def test_threads_taking_ids_at_once_never_get_the_same_one() -> None:
    taken: list[list[str]] = [[] for _ in range(8)]

    def take(into: list[str]) -> None:
        for n in range(2_000):
            into.extend(new_job_ids(1 + n % 3))

    threads = [threading.Thread(target=take, args=(into,)) for into in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [job_id for into in taken for job_id in into]
    assert len(every) == 8 * (667 * 1 + 667 * 2 + 666 * 3)
    assert len(set(every)) == len(every)


def test_a_bulk_larger_than_the_pool_gets_its_own_ids() -> None:
    ids = new_job_ids(POOL_IDS * 3 + 1)
    assert len(ids) == len(set(ids)) == POOL_IDS * 3 + 1
    assert not set(ids) & set(new_job_ids(POOL_IDS))
