"""The worker's garbage-collector settings: applied while it runs, put back after."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from conveyor import WorkerConfig
from conveyor.runtime.gc_tuning import MAX_GC_THRESHOLD, worker_gc


@pytest.fixture(autouse=True)
def _collector_restored() -> Iterator[None]:
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)
    assert frozen == 0  # the suite itself never freezes


def test_the_threshold_is_raised_and_what_exists_frozen_then_both_put_back() -> None:
    gc.set_threshold(700, 10, 10)
    with worker_gc(20_000):
        assert gc.get_threshold() == (20_000, 10, 10)
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0


def test_none_changes_nothing() -> None:
    gc.set_threshold(700, 10, 10)
    with worker_gc(None):
        assert gc.get_threshold() == (700, 10, 10)
        assert gc.get_freeze_count() == 0


def test_a_higher_threshold_of_the_application_is_never_lowered() -> None:
    gc.set_threshold(50_000, 5, 5)
    with worker_gc(20_000):
        assert gc.get_threshold() == (50_000, 5, 5)
    assert gc.get_threshold() == (50_000, 5, 5)


def test_a_process_that_froze_objects_itself_keeps_them_frozen() -> None:
    """An application that freezes (e.g. before forking) manages freezing: the worker neither
    freezes more nor unfreezes what the application froze."""
    gc.freeze()
    frozen = gc.get_freeze_count()
    # Frozen objects can still be freed by reference counting, so the count may only fall: a
    # freeze here would add every object made since, an unfreeze would bring it to 0.
    with worker_gc(20_000):
        assert 0 < gc.get_freeze_count() <= frozen
    assert 0 < gc.get_freeze_count() <= frozen


def test_the_settings_are_put_back_when_the_block_raises() -> None:
    gc.set_threshold(700, 10, 10)
    with pytest.raises(RuntimeError), worker_gc(20_000):
        raise RuntimeError("boom")
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize("bad", [0, -1, MAX_GC_THRESHOLD + 1, True, 1.5, "20000"])
def test_a_threshold_the_collector_cannot_use_is_refused_by_name(bad: object) -> None:
    with pytest.raises(ValueError, match=r"gc_threshold must be an int from 1 to 10,000,000"):
        WorkerConfig(gc_threshold=bad)  # type: ignore[arg-type]
