"""The job hash layout: its fields, in the order the scripts return them, and how a row of
them reads back as a :class:`JobRecord` (or why it cannot)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from conveyor._slots import fast_constructor
from conveyor.drivers.common import history_from_json
from conveyor.drivers.records import JobRecord, JobState

# The job hash fields in the order scripts return them (lua/includes/fields.lua, JOB_FIELDS).
JOB_FIELDS: Final = (
    "n", "d", "s", "p", "a", "m", "r", "e", "q", "b", "f", "t", "x", "w", "k", "c", "res", "err",
    "h", "i", "pg", "pm", "pa", "kc", "kf", "ex", "g", "hd",
)  # fmt: skip


class CorruptJob(Exception):
    """A stored job that cannot be read back (written by a foreign or broken producer)."""

    def __init__(self, job_id: str, queue: str, problem: str) -> None:
        super().__init__(f"job {job_id!r} in queue {queue!r} is corrupt in Redis: {problem}")
        self.job_id = job_id
        self.queue = queue


def not_a_job(job_id: str, queue: str, key: str, error: Exception) -> CorruptJob:
    """The error for a job key that holds something other than a job hash."""
    return CorruptJob(
        job_id,
        queue,
        f"its key {key!r} holds no job hash ({error}); delete or rename that key",
    )


def decode_job(queue: str, row: Sequence[Any], *, strict: bool = True) -> JobRecord:
    """A job from a script's ``{id, fields in JOB_FIELDS order}``.

    A field that cannot be read raises :class:`CorruptJob` naming it when ``strict`` (a worker
    must not run such a job); otherwise it reads as its default, so that listing and inspecting
    a queue still work around one corrupt job."""
    try:
        return _decode(queue, row)
    except (TypeError, ValueError, AttributeError, UnicodeDecodeError, KeyError):
        return _decode_carefully(queue, row, strict)


# A stored state's bytes -> the state: a dict lookup, where ``JobState(text)`` is an enum call.
_STATES: Final = {state.value.encode(): state for state in JobState}


def seconds(text: bytes) -> float:
    """A run or enqueue time as the scripts store it: whole microseconds when exact, else the
    float's full text (see ``when`` in lua/includes/common.lua)."""
    if text.lstrip(b"-").isdigit():
        return int(text) / 1_000_000
    return float(text)


# Every field, in the dataclass's order (see conveyor._slots).
new_record: Final = fast_constructor(JobRecord)


def _decode(queue: str, row: Sequence[Any]) -> JobRecord:
    (i, n, d, s, p, a, m, r, e, q, b, f, t, x, w, k, c, res, err, h, iso, *more) = row
    pg, pm, pa, kc, kf, ex, g, hd = more
    run_at = seconds(r)
    # Every field, in the dataclass's order.
    return new_record(
        i.decode(),  # id
        queue,
        n.decode(),  # name
        b"" if d is None else d,  # payload
        _STATES[s],  # state
        0 if p is None else int(p),  # priority
        0 if a is None else int(a),  # attempt
        int(m),  # max_attempts
        run_at,
        run_at if e is None else seconds(e),  # enqueued_at
        int(q),  # seq
        None if b is None else float(b),  # started_at
        None if f is None else float(f),  # finished_at
        None if t is None else t.decode(),  # lease_token
        None if x is None else float(x),  # lease_expires_at
        None if w is None else w.decode(),  # worker_id
        0 if k is None else int(k),  # stalls
        c is not None,  # cancel_requested
        res,  # result
        None if err is None else err.decode(errors="replace"),  # error
        () if h is None else history_from_json(h),  # errors
        iso is not None,  # isolated
        None if pg is None else float(pg),  # progress
        None if pm is None else pm.decode(errors="replace"),  # progress_message
        None if pa is None else float(pa),  # progress_at
        None if kc is None else float(kc),  # keep_completed
        None if kf is None else float(kf),  # keep_failed
        None if ex is None else float(ex),  # expires_at
        None if g is None else g.decode(),  # group
        None if hd is None else hd.decode(),  # headers
    )


_REQUIRED: Final = object()


def _decode_carefully(queue: str, row: Sequence[Any], strict: bool) -> JobRecord:
    job_id = bytes(row[0]).decode(errors="replace")

    def read(what: str, value: Any, parse: Any, default: Any, *, required: bool = False) -> Any:
        if value is None and not required:
            return default
        try:
            if value is None:
                raise TypeError("missing")
            return parse(value)
        except (TypeError, ValueError, AttributeError, UnicodeDecodeError) as exc:
            if strict:
                problem = "missing" if value is None else f"{bytes(value)[:40]!r} ({exc})"
                raise CorruptJob(job_id, queue, f"field {what} is {problem}") from None
            return default

    def text(value: bytes) -> str:
        return value.decode()

    def state(value: bytes) -> JobState:
        return JobState(value.decode())

    v = dict(zip(JOB_FIELDS, row[1:], strict=True))
    name = read("name", v["n"], text, "", required=True)
    job_state = read("state", v["s"], state, JobState.FAILED, required=True)
    run_at = read("run_at", v["r"], seconds, 0.0, required=True)
    return JobRecord(
        id=job_id,
        queue=queue,
        name=name,
        payload=b"" if v["d"] is None else bytes(v["d"]),
        state=job_state,
        priority=read("priority", v["p"], int, 0),
        attempt=read("attempt", v["a"], int, 0),
        max_attempts=read("max_attempts", v["m"], int, 1, required=True),
        run_at=run_at,
        enqueued_at=read("enqueued_at", v["e"], seconds, run_at),
        seq=read("seq", v["q"], int, 0, required=True),
        started_at=read("started_at", v["b"], float, None),
        finished_at=read("finished_at", v["f"], float, None),
        lease_token=read("lease_token", v["t"], text, None),
        lease_expires_at=read("lease_expires_at", v["x"], float, None),
        worker_id=read("worker_id", v["w"], text, None),
        stalls=read("stalls", v["k"], int, 0),
        cancel_requested=v["c"] is not None,
        result=v["res"],
        error=None if v["err"] is None else bytes(v["err"]).decode(errors="replace"),
        errors=() if v["h"] is None else history_from_json(bytes(v["h"])),
        isolated=v["i"] is not None,
        progress=read("progress", v["pg"], float, None),
        progress_message=None if v["pm"] is None else bytes(v["pm"]).decode(errors="replace"),
        progress_at=read("progress_at", v["pa"], float, None),
        keep_completed=read("keep_completed", v["kc"], float, None),
        keep_failed=read("keep_failed", v["kf"], float, None),
        expires_at=read("expires_at", v["ex"], float, None),
        group=read("group", v["g"], text, None),
        headers=read("headers", v["hd"], text, None),
    )
