"""How the process supervisor (``conveyor worker --processes N``) forwards stop signals."""

from __future__ import annotations

import signal

import pytest

from conveyor.cli._supervisor import Signals


class _Recorder:
    """Stands in for a child process: records what it was sent."""

    def __init__(self) -> None:
        self.sent: list[signal.Signals] = []

    def send(self, sig: signal.Signals) -> None:
        self.sent.append(sig)


@pytest.mark.parametrize("first", [signal.SIGINT, signal.SIGTERM])
def test_a_second_stop_signal_is_forwarded_as_the_other_one(first: signal.Signals) -> None:
    """Two of one signal reaching a child before it handled the first merge into one, so the
    child would miss the "hand back now": the second is forwarded as the other stop signal,
    to running children and to one started late alike."""
    child = _Recorder()
    signals = Signals(lambda: [child])  # type: ignore[list-item]  # pyright: ignore[reportArgumentType,reportReturnType]
    other = signal.SIGTERM if first == signal.SIGINT else signal.SIGINT
    signals.on_signal(first)
    signals.on_signal(first)
    assert child.sent == [first, other]
    late = _Recorder()
    signals.catch_up(late)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    assert late.sent == [first, other]
