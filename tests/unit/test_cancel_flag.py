"""``ctx.cancelled`` makes its lock on first use and otherwise behaves as ``threading.Event``."""

from __future__ import annotations

import threading
import time

from conveyor._context import CancelFlag


def test_it_is_an_event_that_starts_unset() -> None:
    flag = CancelFlag()
    assert isinstance(flag, threading.Event)
    assert not flag.is_set()
    assert flag.wait(0.01) is False
    assert "unset" in repr(flag)


def test_set_and_clear() -> None:
    flag = CancelFlag()
    flag.set()
    assert flag.is_set() and flag.wait() is True and flag.wait(0) is True
    flag.clear()
    assert not flag.is_set() and flag.wait(0) is False


def test_a_thread_waiting_on_it_wakes_when_another_sets_it() -> None:
    flag = CancelFlag()
    woke: list[bool] = []
    waiter = threading.Thread(target=lambda: woke.append(flag.wait(10)))
    waiter.start()
    time.sleep(0.05)
    flag.set()
    waiter.join(5)
    assert woke == [True]


def _race(flag: CancelFlag) -> list[bool]:
    """Two waiters and a setter, all released at once onto a flag nobody has touched yet."""
    results: list[bool] = []
    barrier = threading.Barrier(3)

    def waiter() -> None:
        barrier.wait()
        results.append(flag.wait(5))

    def setter() -> None:
        barrier.wait()
        flag.set()

    threads = [threading.Thread(target=waiter), threading.Thread(target=waiter)]
    threads.append(threading.Thread(target=setter))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return results


def test_racing_threads_share_one_condition() -> None:
    for _ in range(200):
        assert _race(CancelFlag()) == [True, True]
