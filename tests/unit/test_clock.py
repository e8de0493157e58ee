"""Clocks: FakeClock for tests, BackendClock for production."""

from __future__ import annotations

import threading
import time

from conveyor import FakeClock
from conveyor.core.clock import BackendClock


def test_backend_clock_defers_to_the_backend() -> None:
    assert BackendClock().now() is None


def test_fake_clock_starts_at_the_given_time_and_stands_still() -> None:
    clock = FakeClock(1000.0)
    assert clock.now() == 1000.0
    assert clock.now() == 1000.0


def test_fake_clock_defaults_to_the_current_time() -> None:
    before = time.time()
    now = FakeClock().now()
    assert before <= now <= time.time()


def test_advance_moves_forward_and_returns_the_new_time() -> None:
    clock = FakeClock(1000.0)
    assert clock.advance(30) == 1030.0
    assert clock.advance(0.5) == 1030.5
    assert clock.now() == 1030.5


def test_set_jumps_to_a_time() -> None:
    clock = FakeClock(1000.0)
    clock.set(5.0)
    assert clock.now() == 5.0


def test_advance_is_thread_safe() -> None:
    clock = FakeClock(0.0)

    def bump() -> None:
        for _ in range(1000):
            clock.advance(1)

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert clock.now() == 8000.0
