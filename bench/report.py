"""Conveyor against the peers: one table of medians, then the targets, from the runner's
results JSON files (one per suite run) and bench/memory.py's JSON.

    python bench/report.py                                  # the last `make bench`
    python bench/report.py --results a.json b.json --memory m.json --scaling s.json --out R.md

Cells follow the shared report.py's convention: with 3 or more runs, median (min-max) over
the runs that have the figure; with fewer, the values themselves, separated by " / ".
The targets compare medians (with 2 runs: their mean).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MANIFEST = REPO / ".bench" / "last-run.json"
US = "conveyor"
NODE = "bullmq-node"  # BullMQ on Node.js
NODE_NOOP = "bullmq-node-noop"
# Conveyor's variant rows (bench/run.py, BENCH_CONVEYOR_VARIANTS)
US_NOOP, US_P2, US_NOOP_P2, US_SYNC = (
    "conveyor-noop",
    "conveyor-p2",
    "conveyor-noop-p2",
    "conveyor-sync",
)
# The Python peers whose worker command runs two worker processes (the shared README):
# celery prefork -c 2, dramatiq --processes 2, huey -k process -w 2.
MULTI_PROCESS = ("celery", "dramatiq", "huey-process")
MEMORY_BOUND = 150.0  # bytes per queued small job
HANDLER_CEILING_TARGET = "one process within 10 % of the handler-only ceiling"
# Typographic signs of the shared report, spelled as escapes (ruff flags them as ambiguous).
DASH = "\u2013"  # en dash: a missing figure, and the "min-max" ranges
TIMES = "\u00d7"  # multiplication sign, for ratios

Json = dict[str, Any]
Getter = Callable[[Json], float | None]


# ------------------------------------------------------------------ loading
def ours(pid: str) -> bool:
    """Conveyor's row or one of its variants."""
    return pid == US or pid.startswith(US + "-")


def node(pid: str) -> bool:
    return pid == NODE or pid.startswith(NODE + "-")


def python_peer(pid: str) -> bool:
    return not ours(pid) and not node(pid)


@dataclass(frozen=True)
class Data:
    runs: list[Json]  # runner results, one per suite run
    memory: Json  # bench/memory.py output ({} if none)
    scaling: Json = field(default_factory=dict)  # bench/processes.py --json ({} if none)
    skipped: dict[str, str] = field(default_factory=dict)  # peer id -> why it did not run

    def peer_ids(self) -> list[str]:
        """Conveyor and its variants first, then BullMQ on Node, then the runner's order;
        the peers that were left out (bench/run.py says why) where they would have been."""
        seen: list[str] = []
        for run in self.runs:
            for p in run["peers"]:
                if p["id"] not in seen:
                    seen.append(p["id"])
        seen += [pid for pid in self.skipped if pid not in seen]
        return sorted(seen, key=lambda pid: (not ours(pid), pid != US, not node(pid)))

    def ran(self, pid: str) -> bool:
        return any(p is not None for p in self.rows(pid))

    def rows(self, pid: str) -> list[Json | None]:
        """The peer's result in each run (None where that run did not have it)."""
        return [next((p for p in r["peers"] if p["id"] == pid), None) for r in self.runs]

    def info(self, pid: str) -> Json | None:
        for p in self.rows(pid):
            info: Any = (p or {}).get("info")
            if isinstance(info, dict) and "error" not in info:
                return info
        return None


def read_json(path: Path) -> Json:
    with open(path) as f:
        data: Json = json.load(f)
    return data


def load(
    results: Sequence[Path],
    memory: Path | None,
    scaling: Path | None = None,
    skipped: dict[str, str] | None = None,
) -> Data:
    runs = [read_json(p) for p in results]
    return Data(
        runs,
        read_json(memory) if memory and memory.exists() else {},
        read_json(scaling) if scaling and scaling.exists() else {},
        skipped or {},
    )


# ------------------------------------------------------------------ figures
def dig(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def number(x: Any) -> float | None:
    # bool is an int; a figure is never one
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else None


def path(*keys: str) -> Getter:
    return lambda p: number(dig(p, *keys))


def cpu_sum(p: Json) -> float | None:
    # summed per run, then the median taken: the two figures come from the same drain
    w, r = path("drain", "worker_cpu_us_per_job")(p), path("drain", "redis_cpu_us_per_job")(p)
    return w + r if w is not None and r is not None else None


def values(data: Data, pid: str, get: Getter) -> list[float]:
    return [v for p in data.rows(pid) if p is not None and (v := get(p)) is not None]


def middle(vals: Sequence[float]) -> float | None:
    return statistics.median(vals) if vals else None


def memory_of(data: Data, pid: str) -> tuple[Json | None, str | None]:
    """(the measurement, the peer it was borrowed from for a variant with the same producer)."""
    peers = data.memory.get("peers", {})
    m = peers.get(pid)
    if m and "same_producer_as" in m:
        src = m["same_producer_as"]
        return peers.get(src), src
    return m, None


def bytes_per_job(data: Data, pid: str) -> float | None:
    m, _ = memory_of(data, pid)
    return number(dig(m, "bytes_per_job"))


# ------------------------------------------------------------------ formatting
def fmt(x: float | None, digits: int = 0) -> str:
    if x is None:
        return DASH
    if round(x, digits) == 0:
        x = 0.0  # no "-0" for a tiny negative (a memory delta within noise)
    return f"{x:,.{digits}f}"


def cell(vals: Sequence[float], digits: int = 0) -> str:
    if not vals:
        return DASH
    if len(vals) >= 3:
        med = statistics.median(vals)
        return f"{fmt(med, digits)} ({fmt(min(vals), digits)}{DASH}{fmt(max(vals), digits)})"
    return " / ".join(fmt(v, digits) for v in vals)


def latency_digits(vals: Sequence[float]) -> int:
    # as the shared report: fewer decimals for large latencies
    low = min(vals, default=0.0)
    return 0 if low >= 100 else 1 if low >= 10 else 2


def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    """A Markdown table padded to column width, so it also reads well on a terminal."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        padded = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * (w - 1) + ":" if i in right else "-" * w for i, w in enumerate(widths)]
    return [line(headers), line(rule), *(line(r) for r in rows)]


# ------------------------------------------------------------------ the main table
def enqueue_cell(data: Data, pid: str, mode: str, api_key: str | None) -> str:
    info = data.info(pid)
    if api_key and info is not None and not info.get(api_key):
        return "n/a"
    return cell(values(data, pid, path("enqueue", mode, "rate")))


def memory_cell(data: Data, pid: str) -> str:
    m, borrowed = memory_of(data, pid)
    b = number(dig(m, "bytes_per_job"))
    if b is None:
        return "err" if m and "error" in m else DASH
    text = fmt(b)
    if dig(m, "mode") == "single":
        text += " (s)"
    return text + (f" (= {borrowed})" if borrowed else "")


def supervised(data: Data, pid: str) -> bool:
    """A `conveyor worker --processes N` row: its worker processes run in sessions of their
    own, outside the process group whose CPU the runner reads (it sees the supervisor only)."""
    n = number((data.info(pid) or {}).get("processes"))
    return ours(pid) and n is not None and n > 1


NOT_MEASURED = "n/m"


def main_row(data: Data, pid: str) -> list[str]:
    if not data.ran(pid):
        return [f"{pid} (not run)", *([DASH] * (len(MAIN_HEADERS) - 1))]
    p50 = values(data, pid, path("latency", "p50_ms"))
    p99 = values(data, pid, path("latency", "p99_ms"))
    worker_cpu = cell(values(data, pid, path("drain", "worker_cpu_us_per_job")))
    both_cpu = cell(values(data, pid, cpu_sum))
    if supervised(data, pid):
        worker_cpu = both_cpu = NOT_MEASURED
    return [
        pid,
        enqueue_cell(data, pid, "single", None),
        enqueue_cell(data, pid, "concurrent", "concurrent_api"),
        enqueue_cell(data, pid, "bulk", "bulk_api"),
        cell(values(data, pid, path("drain", "rate"))),
        cell(p50, latency_digits(p50)),
        cell(p99, latency_digits(p99)),
        worker_cpu,
        cell(values(data, pid, path("drain", "redis_cpu_us_per_job"))),
        both_cpu,
        memory_cell(data, pid),
    ]


MAIN_HEADERS = [
    "peer",
    "enqueue single jobs/s",
    "enqueue concurrent jobs/s",
    "enqueue bulk jobs/s",
    "drain jobs/s",
    "latency p50 ms",
    "latency p99 ms",
    "worker CPU µs/job",
    "Redis CPU µs/job",
    "worker+Redis CPU µs/job",
    "Redis bytes/queued job",
]


# ------------------------------------------------------------------ targets
@dataclass(frozen=True)
class Target:
    label: str
    get: Callable[[Data, str], float | None]
    factor: float  # Conveyor must be >= factor x best (higher is better) or <= / < it
    higher_is_better: bool
    strict: bool = False  # "<" instead of "<="
    only_peer: str | None = None  # compare with this peer instead of the best one
    needs_api: str | None = None  # peers without this API have no such figure


def median_of(get: Getter) -> Callable[[Data, str], float | None]:
    return lambda data, pid: middle(values(data, pid, get))


TARGETS = [
    Target(f"drain ≥ 3{TIMES} the fastest peer's", median_of(path("drain", "rate")), 3.0, True),
    Target(
        f"bulk enqueue ≥ 2{TIMES} the fastest peer's",
        median_of(path("enqueue", "bulk", "rate")),
        2.0,
        True,
        needs_api="bulk_api",
    ),
    Target(
        "single enqueue ≥ the fastest peer's", median_of(path("enqueue", "single", "rate")), 1, True
    ),
    Target("latency p50 ≤ the best peer's", median_of(path("latency", "p50_ms")), 1.0, False),
    Target("latency p99 ≤ the best peer's", median_of(path("latency", "p99_ms")), 1.0, False),
    Target("Redis bytes/queued job ≤ bullmq's", bytes_per_job, 1.0, False, only_peer="bullmq"),
    Target("worker+Redis CPU/job < every peer's", median_of(cpu_sum), 1.0, False, strict=True),
]


def best_peer(data: Data, t: Target) -> tuple[str | None, float | None]:
    # our own variants and the Node no-op row (a different handler) are no peers here
    candidates = (
        [t.only_peer]
        if t.only_peer
        else [p for p in data.peer_ids() if not ours(p) and p != NODE_NOOP]
    )
    scored = []
    for pid in candidates:
        if t.needs_api and not (data.info(pid) or {}).get(t.needs_api):
            continue
        v = t.get(data, pid)
        if v is not None:
            scored.append((v, pid))
    if not scored:
        return None, None
    v, pid = max(scored) if t.higher_is_better else min(scored)
    return pid, v


def on_redis(data: Data) -> bool:
    return (data.info(US) or {}).get("url_scheme") in (None, "redis", "rediss", "unix")


def target_row(data: Data, t: Target) -> list[str]:
    ours = t.get(data, US)
    pid, best = best_peer(data, t)
    op = "≥" if t.higher_is_better else "<" if t.strict else "≤"
    needed = f"{op} {t.factor:.2f}{TIMES}"
    known = [abs(x) for x in (ours, best) if x is not None]
    digits = 2 if known and max(known) < 100 else 0
    if ours is None or best is None or best == 0:
        return [
            t.label,
            fmt(ours, digits),
            f"{fmt(best, digits)} ({pid or DASH})",
            DASH,
            needed,
            "no data",
        ]
    ratio = ours / best
    if t.higher_is_better:
        met = ratio >= t.factor
    else:
        met = ratio < t.factor if t.strict else ratio <= t.factor
    return [
        t.label,
        fmt(ours, digits),
        f"{fmt(best, digits)} ({pid})",
        f"{ratio:.2f}{TIMES}",
        needed,
        # a smoke test on another backend must not read as a verdict
        ("yes" if met else "NO") + ("" if on_redis(data) else " (not Redis)"),
    ]


# ------------------------------------------------------------------ context and notes
def header(data: Data) -> list[str]:
    r0 = data.runs[0]
    ours = data.rows(US)
    info = data.info(US) or {}
    lines = [
        "# Conveyor against the peer benchmark",
        "",
        f"Runs: {len(data.runs)} ({', '.join(r['tag'] for r in data.runs)}); N = {r0['n']:,} jobs "
        f"per enqueue mode and drain; {r0['cpus']} CPUs (shared, noisy); private "
        f"redis-server {r0['redis_version']}; runner Python {r0['python']}.",
        "Load average at the start of each run: "
        + "; ".join(", ".join(f"{x:.2f}" for x in r["loadavg_start"]) for r in data.runs)
        + ".",
        "PING RTT p50 the runner measured just before Conveyor's row (µs): "
        + " / ".join(fmt(number(dig(p, "ping_rtt_us_p50_before")), 0) for p in ours)
        + "; load average when Conveyor's row had finished: "
        + " / ".join(
            ", ".join(f"{x:.2f}" for x in (p or {}).get("loadavg_before", [])) or DASH for p in ours
        )
        + ".",
    ]
    if node_info := data.info(NODE):
        lines.append(
            f"BullMQ on Node: bullmq {node_info.get('version')}, ioredis "
            f"{node_info.get('ioredis')}, Node.js {node_info.get('node')} (one process, "
            "concurrency 100)."
        )
    scheme = info.get("url_scheme")
    if scheme and scheme not in ("redis", "rediss"):
        lines.append(
            f"**Conveyor ran on a {scheme}:// URL (BENCH_CONVEYOR_URL), not Redis: its row is a "
            "pipeline check, not a Redis backend measurement.**"
        )
    return [*lines, ""]


def memory_sizes(data: Data) -> str:
    """'N = 1,000,000 for conveyor, bullmq; 100,000 for celery, ...' from the memory JSON."""
    by_n: dict[int, list[str]] = {}
    for pid, v in data.memory.get("peers", {}).items():
        if isinstance(v, dict) and isinstance(v.get("n"), int):
            by_n.setdefault(v["n"], []).append(pid)
    if not by_n:
        return "not measured"
    return "; ".join(f"{n:,} for {', '.join(ids)}" for n, ids in sorted(by_n.items(), reverse=True))


def legend(data: Data) -> list[str]:
    ns = memory_sizes(data)
    return [
        "",
        f"Cells: median (min{DASH}max) over the runs with 3+ values, else the values separated by "
        "/. Enqueue: one producer process (single = one call at a time, concurrent = "
        "asyncio.gather 100 in flight, bulk = the library's bulk API per 1,000); n/a = no such "
        "API. Drain: one worker command, steady-state rate. Latency: 500 jobs 5 ms apart into an "
        "idle worker. CPU per job: from the first to the last drained job, worker process group "
        "and redis-server. Redis bytes/queued job: (used_memory after - before) / N after "
        f"enqueueing N jobs into an empty db, N = {ns}; (s) = no bulk API, enqueued "
        "one at a time; (= peer) = variant with that peer's producer. Figures are only "
        "meaningful as ratios within one run.",
    ]


def short_error(text: str) -> str:
    """The runner keeps a traceback's tail; its first line and last line say what happened."""
    lines = [x.strip() for x in str(text).splitlines() if x.strip()]
    if len(lines) <= 1:
        return (lines or [""])[0][:200]
    head = lines[0].split("Traceback")[0].strip()
    return f"{head} ... {lines[-1]}"[:300]


def notes(data: Data) -> list[str]:
    out = []
    for pid in data.peer_ids():
        for i, p in enumerate(data.rows(pid), 1):
            if p is None:
                continue
            if dup := dig(p, "drain", "duplicates"):
                out.append(f"- {pid}, run {i}: {dup} duplicate executions")
            out += [f"- {pid}, run {i}: {short_error(e)}" for e in p.get("errors", [])]
    for pid, m in data.memory.get("peers", {}).items():
        if isinstance(m, dict) and "error" in m:
            out.append(f"- {pid}, memory: {short_error(m['error'])}")
    return ["", "Errors and duplicates:", *out] if out else []


def memory_keys_line(data: Data) -> list[str]:
    m = data.memory.get("peers", {})
    parts = [
        f"{pid} {v['dbsize']:,} for {v['n']:,}"
        for pid, v in m.items()
        if isinstance(v, dict) and "dbsize" in v and "n" in v
    ]
    if not parts:
        return []
    return ["", "Redis keys (DBSIZE) after enqueueing N jobs: " + ", ".join(parts) + "."]


# ------------------------------------------------------------------ against Node and Python
RATE, LOW = True, False  # higher is better / lower is better


@dataclass(frozen=True)
class Figure:
    label: str
    get: Getter
    higher_is_better: bool
    us: str = US  # our row
    node: str | None = NODE  # the Node row it is set against (None: none)
    python: Callable[[str], bool] = python_peer  # which Python peers compete
    needs_api: str | None = None
    digits: int | None = 0  # None: latency digits


def rate_of(*keys: str) -> Getter:
    return path(*keys)


FIGURES = [
    Figure("enqueue single jobs/s", rate_of("enqueue", "single", "rate"), RATE),
    Figure(
        "enqueue concurrent jobs/s",
        rate_of("enqueue", "concurrent", "rate"),
        RATE,
        needs_api="concurrent_api",
    ),
    Figure("enqueue bulk jobs/s", rate_of("enqueue", "bulk", "rate"), RATE, needs_api="bulk_api"),
    Figure(
        "SyncQueue single enqueue jobs/s (Python: any)",
        rate_of("enqueue", "single", "rate"),
        RATE,
        us=US_SYNC,
    ),
    Figure("drain jobs/s, one process", rate_of("drain", "rate"), RATE),
    Figure(
        "drain jobs/s, --processes 2 (Python: multi-process)",
        rate_of("drain", "rate"),
        RATE,
        us=US_P2,
        python=lambda pid: pid in MULTI_PROCESS,
    ),
    Figure("latency p50 ms", path("latency", "p50_ms"), LOW, digits=None),
    Figure("latency p99 ms", path("latency", "p99_ms"), LOW, digits=None),
    Figure("worker CPU µs/job", path("drain", "worker_cpu_us_per_job"), LOW),
    Figure("Redis CPU µs/job", path("drain", "redis_cpu_us_per_job"), LOW),
    Figure(
        "no-op drain jobs/s, one process",
        rate_of("drain", "rate"),
        RATE,
        us=US_NOOP,
        node=NODE_NOOP,
        python=lambda pid: False,
    ),
    Figure(
        "no-op worker CPU µs/job",
        path("drain", "worker_cpu_us_per_job"),
        LOW,
        us=US_NOOP,
        node=NODE_NOOP,
        python=lambda pid: False,
    ),
    Figure(
        "no-op Redis CPU µs/job",
        path("drain", "redis_cpu_us_per_job"),
        LOW,
        us=US_NOOP,
        node=NODE_NOOP,
        python=lambda pid: False,
    ),
]


def med(data: Data, pid: str, get: Getter) -> float | None:
    """A row's figure across runs: the median (with 2 runs, their mean)."""
    return middle(values(data, pid, get))


def best_python(data: Data, f: Figure) -> tuple[str | None, float | None]:
    scored = []
    for pid in data.peer_ids():
        if not f.python(pid) or not data.ran(pid):
            continue
        if f.needs_api and not (data.info(pid) or {}).get(f.needs_api):
            continue
        if (v := med(data, pid, f.get)) is not None:
            scored.append((v, pid))
    if not scored:
        return None, None
    v, pid = max(scored) if f.higher_is_better else min(scored)
    return pid, v


def ratio_text(ours_: float | None, theirs: float | None) -> str:
    if ours_ is None or theirs is None or theirs == 0:
        return DASH
    return f"{ours_ / theirs:.2f}{TIMES}"


def figure_digits(f: Figure, *xs: float | None) -> int:
    if f.digits is not None:
        return f.digits
    return latency_digits([x for x in xs if x is not None])


def comparison_row(data: Data, f: Figure) -> list[str]:
    ours_ = med(data, f.us, f.get)
    theirs = med(data, f.node, f.get) if f.node else None
    pid, best = best_python(data, f)
    d = figure_digits(f, ours_, theirs, best)
    return [
        f.label,
        f.us,
        fmt(ours_, d),
        f"{fmt(theirs, d)}" if f.node else DASH,
        ratio_text(ours_, theirs),
        f"{fmt(best, d)} ({pid})" if pid else DASH,
        ratio_text(ours_, best),
    ]


def comparison(data: Data) -> list[str]:
    headers = ["figure", "our row", "Conveyor", "BullMQ-Node", "÷ Node", "best Python peer",
               "÷ Python"]  # fmt: skip
    rows = [comparison_row(data, f) for f in FIGURES]
    return [
        "",
        "## Conveyor against BullMQ on Node and the best Python peer (medians, same run)",
        "",
        *md_table(headers, rows, right={2, 3, 4, 5, 6}),
        "",
        f"Ratios are Conveyor {chr(0xF7)} theirs: above 1 is better for rates, below 1 for "
        "latency and CPU. Best Python peer: any layout (multi-process ones included) unless the "
        "row says otherwise. No-op rows: Conveyor's no-op variant against BullMQ-Node's "
        "(`BENCH_VARIANT=noop`: the handler counts in memory, totals flushed every 5 ms); the "
        "Python peers have no such variant. BullMQ-Node's column in the `--processes 2` and "
        "SyncQueue rows is its one-process Node worker and its async producer.",
    ]


# ------------------------------------------------------------------ scaling
SUITE_ROW = {("0", 1): US, ("0", 2): US_P2, ("noop", 1): US_NOOP, ("noop", 2): US_NOOP_P2}


def scaling_rows(data: Data) -> list[Json]:
    rows: Any = data.scaling.get("rows")
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def scaling_row(data: Data, r: Json) -> list[str]:
    rates = [float(x) for x in r.get("rates", [])]
    ratio = DASH
    if "ratio" in r:
        ratios = [float(x) for x in r.get("ratios", [])]
        ratio = f"{r['ratio']:.2f}{TIMES}"
        if len(ratios) > 1:
            ratio += f" ({min(ratios):.2f}{DASH}{max(ratios):.2f})"
    suite = SUITE_ROW.get((str(r.get("work")), int(r.get("processes", 0))))
    suite_rate = cell(values(data, suite, path("drain", "rate"))) if suite else DASH
    return [
        "shared accounting" if r.get("work") == "0" else str(r.get("handler")),
        str(r.get("processes")),
        cell(rates),
        ratio,
        fmt(number(r.get("worker_cpu_us_per_job"))),
        fmt(number(r.get("redis_cpu_us_per_job"))),
        fmt(number(r.get("ceiling"))),
        f"{suite_rate} ({suite})" if suite and data.ran(suite) else DASH,
    ]


def scaling(data: Data) -> list[str]:
    rows = scaling_rows(data)
    if not rows:
        return [
            "",
            "## Scaling: worker processes 1 and 2",
            "",
            "Not measured (BENCH_SCALING_ROUNDS=0 or the step failed).",
        ]
    headers = ["handler", "processes", "drain jobs/s", f"{TIMES} 1 process", "worker CPU µs/job",
               "Redis CPU µs/job", "CPU ceiling jobs/s", "suite drain jobs/s (row)"]  # fmt: skip
    n, rounds = data.scaling.get("n"), data.scaling.get("rounds")
    return [
        "",
        "## Scaling: worker processes 1 and 2 (Conveyor, bench/processes.py)",
        "",
        *md_table(headers, [scaling_row(data, r) for r in rows], right=set(range(1, 8))),
        "",
        f"Each round drains the same backlog of {n:,} jobs once with `conveyor worker --burst` and "
        f"once with `--processes 2 --burst`, alternating which goes first; {rounds} round(s). "
        f"Drain cells as above; {TIMES} 1 process: the median of the per-round ratios (range). "
        "CPU per job: the worker command's whole process tree (supervisor and worker "
        "processes, which run in sessions of their own) and redis-server, from the first to "
        "the last job counted. CPU ceiling: the drain that CPU allows on 2 vCPUs (each worker "
        "process at most one core, workers and Redis together at most two); the figure a "
        "loaded machine disturbs least. Suite drain: the same layout's row in the main table "
        "(a worker started with N jobs queued, not --burst), for comparison.",
    ]


# ------------------------------------------------------------------ issue 12 checklist
@dataclass(frozen=True)
class Check:
    label: str
    ours: float | None
    theirs: float | None
    ref: str  # what `theirs` is
    factor: float
    higher_is_better: bool
    strict: bool = False
    absolute: bool = False  # `theirs` is a fixed bound, not a peer's figure
    ratio: float | None = None  # when the ratio is not ours / theirs (per-round ratios)
    digits: int = 0
    note: str = ""


def best_of(data: Data, ids: Sequence[str], get: Getter, high: bool, api: str | None = None
            ) -> tuple[str | None, float | None]:  # fmt: skip
    scored = []
    for pid in ids:
        if api and not (data.info(pid) or {}).get(api):
            continue
        if (v := med(data, pid, get)) is not None:
            scored.append((v, pid))
    if not scored:
        return None, None
    v, pid = max(scored) if high else min(scored)
    return pid, v


def checks(data: Data) -> list[Check]:
    others = [p for p in data.peer_ids() if not ours(p) and p != NODE_NOOP and data.ran(p)]
    single, conc = path("enqueue", "single", "rate"), path("enqueue", "concurrent", "rate")
    drain, wcpu = path("drain", "rate"), path("drain", "worker_cpu_us_per_job")
    rcpu = path("drain", "redis_cpu_us_per_job")
    out = [
        Check("concurrent enqueue ≥ BullMQ-Node's", med(data, US, conc), med(data, NODE, conc),
              NODE, 1.0, True),
        Check("single enqueue ≥ BullMQ-Node's", med(data, US, single), med(data, NODE, single),
              NODE, 1.0, True),
        Check("SyncQueue single enqueue ≥ huey's", med(data, US_SYNC, single),
              med(data, "huey", single), "huey", 1.0, True),
        Check(f"no-op drain ≥ 1.5{TIMES} BullMQ-Node's no-op drain", med(data, US_NOOP, drain),
              med(data, NODE_NOOP, drain), NODE_NOOP, 1.5, True),
        Check(f"no-op worker CPU/job ≤ 0.5{TIMES} Node's", med(data, US_NOOP, wcpu),
              med(data, NODE_NOOP, wcpu), NODE_NOOP, 0.5, False),
        Check(f"no-op Redis CPU/job ≤ 0.5{TIMES} Node's", med(data, US_NOOP, rcpu),
              med(data, NODE_NOOP, rcpu), NODE_NOOP, 0.5, False),
    ]  # fmt: skip
    shared = next((r for r in scaling_rows(data) if r.get("work") == "0" and "ratio" in r), None)
    if shared is not None:
        one = next(r for r in scaling_rows(data) if r.get("work") == "0" and r["processes"] == 1)
        out.append(Check(f"--processes 2 ≥ 1.6{TIMES} one process (shared handler)",
                         number(shared.get("rate")), number(one.get("rate")),
                         "1 process, scaling", 1.6, True, ratio=number(shared.get("ratio")),
                         note="median of per-round ratios"))  # fmt: skip
    else:  # no scaling step: the suite's rows
        out.append(Check(f"--processes 2 ≥ 1.6{TIMES} one process (shared handler)",
                         med(data, US_P2, drain), med(data, US, drain), US, 1.6, True,
                         note="suite rows"))  # fmt: skip
    mp, mp_rate = best_of(data, [p for p in MULTI_PROCESS if data.ran(p)], drain, True)
    out.append(Check("--processes 2 ahead of every multi-process Python peer",
                     med(data, US_P2, drain), mp_rate, mp or "none ran", 1.0, True,
                     strict=True))  # fmt: skip
    for key in ("p50_ms", "p99_ms"):
        get = path("latency", key)
        pid, v = best_of(data, others, get, False)
        out.append(Check(f"latency {key[:3]} ≤ every peer's", med(data, US, get), v,
                         pid or DASH, 1.0, False, digits=2))  # fmt: skip
    bulk = path("enqueue", "bulk", "rate")
    pid, v = best_of(data, others, bulk, True, api="bulk_api")
    out.append(Check(f"bulk enqueue ≥ 2{TIMES} every peer's", med(data, US, bulk), v, pid or DASH,
                     2.0, True))  # fmt: skip
    out.append(Check("Redis bytes per queued small job ≤ 150", bytes_per_job(data, US),
                     MEMORY_BOUND, "bound", 1.0, False, absolute=True))  # fmt: skip
    return out


def check_row(c: Check, on: bool) -> list[str]:
    ops = (">", "≥") if c.higher_is_better else ("<", "≤")
    op = ops[0] if c.strict else ops[1]
    ref = f"{fmt(c.theirs, c.digits)}" + ("" if c.absolute else f" ({c.ref})")
    needed = f"{op} {fmt(c.theirs, c.digits)}" if c.absolute else f"{op} {c.factor:g}{TIMES}"
    if c.ours is None or c.theirs is None or c.theirs == 0:
        return [c.label, fmt(c.ours, c.digits), ref, DASH, needed, "no data"]
    ratio = c.ratio if c.ratio is not None else c.ours / c.theirs
    if c.higher_is_better:
        met = ratio > c.factor if c.strict else ratio >= c.factor
    else:
        met = ratio < c.factor if c.strict else ratio <= c.factor
    shown = f"{ratio:.2f}{TIMES}"
    verdict = ("met" if met else "NOT MET") + ("" if on else " (not Redis)")
    if c.note:
        shown += f" ({c.note})"
    return [c.label, fmt(c.ours, c.digits), ref, shown, needed, verdict]


def checklist(data: Data) -> list[str]:
    rows = [check_row(c, on_redis(data)) for c in checks(data)]
    rows.append([HANDLER_CEILING_TARGET, DASH, DASH, DASH, f"≥ 0.9{TIMES}", "not measured"])
    headers = ["target", "Conveyor", "reference", "ratio", "needed", "verdict"]
    return [
        "",
        "## Issue 12 targets",
        "",
        *md_table(headers, rows, right={1, 2, 3, 4}),
        "",
        "Conveyor's medians against the reference's in the same run. Rows: enqueue and latency "
        f"`{US}`, SyncQueue `{US_SYNC}`, no-op `{US_NOOP}` against `{NODE_NOOP}`, "
        f'`--processes 2` `{US_P2}` (against one process: the scaling step). "Every peer": '
        f"every other row that ran, BullMQ-Node included, but not `{NODE_NOOP}` (another "
        "handler). The handler-only ceiling (the accounting call alone, 100 coroutines, no "
        "queue) is not part of this suite: `BENCH_RAW=1` keeps the shared runner's raw Redis "
        "floor in the results JSON.",
    ]


def not_run(data: Data) -> list[str]:
    lines = [f"- {pid}: {why}" for pid, why in data.skipped.items() if not data.ran(pid)]
    return ["", "Not run:", *lines] if lines else []


def render(data: Data) -> str:
    lines = header(data)
    rows = [main_row(data, pid) for pid in data.peer_ids()]
    lines += md_table(MAIN_HEADERS, rows, right=set(range(1, len(MAIN_HEADERS))))
    lines += legend(data) + not_run(data) + memory_keys_line(data) + notes(data)
    lines += comparison(data) + scaling(data) + checklist(data)
    lines += ["", "## Earlier targets (Conveyor's median vs the best peer's median)", ""]
    target_headers = ["target", "Conveyor", "best peer", "ratio", "needed", "met"]
    lines += md_table(target_headers, [target_row(data, t) for t in TARGETS], right={1, 2, 3, 4})
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Inputs:
    results: list[Path]
    memory: Path | None
    scaling: Path | None
    skipped: dict[str, str]


def from_manifest(path: Path) -> Inputs:
    if not path.exists():
        sys.exit(f"{path} not found: run `make bench` first, or pass --results")
    m = read_json(path)

    def opt(key: str) -> Path | None:
        return Path(m[key]) if m.get(key) else None

    skipped = m.get("skipped") or {}
    return Inputs([Path(p) for p in m["results"]], opt("memory"), opt("scaling"), dict(skipped))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, nargs="*", help="runner results JSON files")
    ap.add_argument("--memory", type=Path, help="bench/memory.py JSON")
    ap.add_argument("--scaling", type=Path, help="bench/processes.py --json output")
    ap.add_argument("--manifest", type=Path, default=MANIFEST, help="written by bench/run.py")
    ap.add_argument("--out", type=Path, help="also write the report to this file")
    a = ap.parse_args()
    got = Inputs(a.results, a.memory, a.scaling, {}) if a.results else from_manifest(a.manifest)
    data = load(got.results, a.memory or got.memory, a.scaling or got.scaling, got.skipped)
    if not data.runs:
        sys.exit("no results")
    text = render(data)
    sys.stdout.write(text)
    if a.out:
        a.out.write_text(text)


if __name__ == "__main__":
    main()
