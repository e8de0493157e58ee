"""Turning queue data into what the templates show: times, payload text, throughput bars.

Templates are rendered with autoescaping on, so nothing here builds HTML: every payload, error
and name reaches the page as text.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape

from conveyor._jobinfo import JobInfo
from conveyor.core.secrets import redacted_payload
from conveyor.dashboard.cache import HOUR_MINUTES, Snapshot
from conveyor.drivers.records import JobState, QueueInfo, QueueStats, WorkerInfo

HERE = Path(__file__).parent
SHOWN_BYTES = 64 * 1024  # of a payload, result or traceback; the rest is cut with a note
STATES = (
    JobState.QUEUED,
    JobState.SCHEDULED,
    JobState.ACTIVE,
    JobState.RETRYING,
    JobState.COMPLETED,
    JobState.FAILED,
    JobState.CANCELLED,
)
WAITING = (JobState.QUEUED, JobState.SCHEDULED, JobState.RETRYING)


def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    env.filters["ago"] = ago
    env.filters["qs"] = query_string
    return env


def query_string(params: dict[str, object]) -> str:
    """``params`` as a query string, leaving out the empty ones (escaped by the template)."""
    return urlencode([(k, str(v)) for k, v in params.items() if v not in (None, "")])


def when(value: datetime | float | None) -> str:
    if value is None:
        return "-"
    if not isinstance(value, datetime):
        value = datetime.fromtimestamp(value, tz=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(value: datetime | float | None) -> str:
    if value is None:
        return "-"
    stamp = value.timestamp() if isinstance(value, datetime) else value
    seconds = time.time() - stamp
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 60:
        text = f"{seconds:.0f}s"
    elif seconds < 3600:
        text = f"{seconds / 60:.0f}m"
    elif seconds < 86400:
        text = f"{seconds / 3600:.1f}h"
    else:
        text = f"{seconds / 86400:.1f}d"
    return f"in {text}" if future else f"{text} ago"


@dataclass(frozen=True)
class Shown:
    """A text cut to what the page shows, and how long it was."""

    text: str
    total: int  # bytes of the whole text
    cut: bool


def shown(text: str) -> Shown:
    data = text.encode()
    if len(data) <= SHOWN_BYTES:
        return Shown(text, len(data), False)
    return Shown(data[:SHOWN_BYTES].decode("utf-8", "ignore"), len(data), True)


def payload_of(info: JobInfo) -> Shown:
    return shown(redacted_payload(info.payload_json, info.headers))


def result_of(info: JobInfo) -> Shown | None:
    if info.result_json is None:
        return None
    try:
        text = json.dumps(json.loads(info.result_json), indent=2, ensure_ascii=False)
    except ValueError:
        text = info.result_json.decode("utf-8", "replace")
    return shown(text)


@dataclass(frozen=True)
class Bar:
    x: int
    completed_y: int
    completed_h: int
    failed_y: int
    failed_h: int
    title: str


@dataclass(frozen=True)
class Throughput:
    completed: int
    retried: int
    failed: int
    bars: tuple[Bar, ...]
    peak: int

    @property
    def failure_rate(self) -> float | None:
        finished = self.completed + self.failed
        return None if finished == 0 else self.failed / finished


CHART_HEIGHT = 40
BAR_WIDTH = 4


def throughput(samples: Sequence[QueueStats], *, now: float | None = None) -> Throughput:
    """The last hour of one queue (or of several, summed per minute) as totals and bars: one
    bar per minute, oldest on the left, completed stacked on failed."""
    last = int((time.time() if now is None else now) // 60)
    first = last - HOUR_MINUTES + 1
    completed = dict.fromkeys(range(first, last + 1), 0)
    failed = dict.fromkeys(range(first, last + 1), 0)
    retried = 0
    for s in samples:
        if first <= s.minute <= last:
            completed[s.minute] += s.completed
            failed[s.minute] += s.failed
            retried += s.retried
    peak = max([completed[m] + failed[m] for m in completed] + [1])
    bars: list[Bar] = []
    for i, minute in enumerate(range(first, last + 1)):
        done_h = round(CHART_HEIGHT * completed[minute] / peak)
        fail_h = round(CHART_HEIGHT * failed[minute] / peak)
        stamp = datetime.fromtimestamp(minute * 60, tz=UTC).strftime("%H:%M")
        bars.append(
            Bar(
                x=i * (BAR_WIDTH + 1),
                completed_y=CHART_HEIGHT - done_h - fail_h,
                completed_h=done_h,
                failed_y=CHART_HEIGHT - fail_h,
                failed_h=fail_h,
                title=f"{stamp} UTC: {completed[minute]} completed, {failed[minute]} failed",
            )
        )
    return Throughput(sum(completed.values()), retried, sum(failed.values()), tuple(bars), peak)


@dataclass(frozen=True)
class QueueRow:
    info: QueueInfo
    workers: int
    waiting: int
    total: int
    hour: Throughput

    @property
    def unserved(self) -> bool:
        """Jobs wait, the queue is not paused, and no live worker serves it."""
        return self.waiting > 0 and self.workers == 0 and not self.info.paused


def queue_rows(snapshot: Snapshot) -> list[QueueRow]:
    return [
        QueueRow(
            info,
            serving(info.name, snapshot.workers),
            sum(info.counts.get(s, 0) for s in WAITING),
            sum(info.counts.values()),
            throughput(snapshot.stats.get(info.name, ())),
        )
        for info in snapshot.queues
    ]


def serving(queue: str, workers: Sequence[WorkerInfo]) -> int:
    return sum(queue in w.queues for w in workers)
