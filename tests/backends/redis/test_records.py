"""Reading a script's job row back into the record of its fields (the constructor used is
tested in tests/unit/test_slots.py)."""

from __future__ import annotations

from conveyor.backends.redis._records import JOB_FIELDS, decode_job
from conveyor.drivers.records import AttemptError, JobRecord, JobState


def test_a_row_with_every_field_reads_into_the_field_of_its_name() -> None:
    stored = {
        "n": b"email", "d": b"{}", "s": b"active", "p": b"3", "a": b"2", "m": b"5",
        "r": b"1700000000000000", "e": b"1699999999000000", "q": b"42", "b": b"1700000001.5",
        "f": b"1700000002.5", "t": b"tok", "x": b"1700000030.5", "w": b"w1", "k": b"1",
        "c": b"1", "res": b'"r"', "err": b"boom", "i": b"1",
        "h": b'[[1, 1700000000.25, "e1"]]',
        "pg": b"0.5", "pm": b"half", "pa": b"1700000001.75", "kc": b"60", "kf": b"120",
        "ex": b"1700000090.5", "g": b"grp", "hd": b'{"v": 2}',
    }  # fmt: skip
    assert set(stored) == set(JOB_FIELDS)
    record = decode_job("mail", [b"j1", *(stored[name] for name in JOB_FIELDS)])
    assert record == JobRecord(
        id="j1",
        queue="mail",
        name="email",
        payload=b"{}",
        state=JobState.ACTIVE,
        priority=3,
        attempt=2,
        max_attempts=5,
        run_at=1700000000.0,
        enqueued_at=1699999999.0,
        seq=42,
        started_at=1700000001.5,
        finished_at=1700000002.5,
        lease_token="tok",
        lease_expires_at=1700000030.5,
        worker_id="w1",
        stalls=1,
        cancel_requested=True,
        result=b'"r"',
        error="boom",
        errors=(AttemptError(1, 1700000000.25, "e1"),),
        isolated=True,
        progress=0.5,
        progress_message="half",
        progress_at=1700000001.75,
        keep_completed=60.0,
        keep_failed=120.0,
        expires_at=1700000090.5,
        group="grp",
        headers='{"v": 2}',
    )


def test_every_state_reads_back_and_an_unknown_one_is_named() -> None:
    """The state is looked up by its stored bytes; one no state has is a corrupt job that names
    the field (strict), or reads as failed when listing."""
    import pytest

    from conveyor.backends.redis._records import CorruptJob

    def row(state: bytes) -> list[bytes | None]:
        stored = {"n": b"email", "s": state, "m": b"3", "r": b"1700000000000000", "q": b"7"}
        return [b"j1", *(stored.get(name) for name in JOB_FIELDS)]

    for state in JobState:
        assert decode_job("mail", row(state.value.encode())).state is state
    with pytest.raises(CorruptJob, match="field state is b'paused'"):
        decode_job("mail", row(b"paused"))
    assert decode_job("mail", row(b"paused"), strict=False).state is JobState.FAILED
