"""The line of jobs leased ahead: fetch order, and which jobs it holds, however they leave it."""

from __future__ import annotations

from conveyor.runtime.ahead import LeasedAhead
from tests.unit.records import active_record


def test_it_knows_which_jobs_wait_however_they_leave() -> None:
    line = LeasedAhead(patience=10.0)
    for job_id, token in [("a", "a1"), ("b", "b1"), ("a", "a2"), ("c", "c1")]:
        line.add(active_record(id=job_id, lease_token=token))
    assert [r.lease_token for r in line] == ["a1", "b1", "a2", "c1"]
    assert "a" in line and "b" in line and "z" not in line

    assert line.pop().lease_token == "a1"
    assert "a" in line  # its other attempt still waits
    assert [r.lease_token for r in line.remove("a", other_than="x")] == ["a2"]
    assert "a" not in line
    assert line.remove("a") == []
    assert [r.id for r in line.remove("b", token="b1")] == ["b"]
    assert "b" not in line
    assert [r.id for r in line.overdue(float("inf"))] == ["c"]
    assert "c" not in line and not line and len(line) == 0

    line.add(active_record(id="d", lease_token="d1"))
    assert [r.id for r in line.take_all()] == ["d"]
    assert "d" not in line and line.next_overdue() is None
