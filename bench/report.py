"""Conveyor against the peers: one table of medians, then the targets, from the runner's
results JSON files (one per suite run) and bench/memory.py's JSON.

    python bench/report.py                                  # the last `make bench`
    python bench/report.py --results a.json b.json --memory m.json --out REPORT.md

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MANIFEST = REPO / ".bench" / "last-run.json"
US = "conveyor"
# Typographic signs of the shared report, spelled as escapes (ruff flags them as ambiguous).
DASH = "\u2013"  # en dash: a missing figure, and the "min-max" ranges
TIMES = "\u00d7"  # multiplication sign, for ratios

Json = dict[str, Any]
Getter = Callable[[Json], float | None]


# ------------------------------------------------------------------ loading
@dataclass(frozen=True)
class Data:
    runs: list[Json]  # runner results, one per suite run
    memory: Json  # bench/memory.py output ({} if none)

    def peer_ids(self) -> list[str]:
        """Conveyor first, then the peers in the runner's order."""
        seen: list[str] = []
        for run in self.runs:
            for p in run["peers"]:
                if p["id"] not in seen:
                    seen.append(p["id"])
        return sorted(seen, key=lambda pid: pid != US)

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


def load(results: Sequence[Path], memory: Path | None) -> Data:
    runs = [read_json(p) for p in results]
    return Data(runs, read_json(memory) if memory and memory.exists() else {})


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


def main_row(data: Data, pid: str) -> list[str]:
    p50 = values(data, pid, path("latency", "p50_ms"))
    p99 = values(data, pid, path("latency", "p99_ms"))
    return [
        pid,
        enqueue_cell(data, pid, "single", None),
        enqueue_cell(data, pid, "concurrent", "concurrent_api"),
        enqueue_cell(data, pid, "bulk", "bulk_api"),
        cell(values(data, pid, path("drain", "rate"))),
        cell(p50, latency_digits(p50)),
        cell(p99, latency_digits(p99)),
        cell(values(data, pid, path("drain", "worker_cpu_us_per_job"))),
        cell(values(data, pid, path("drain", "redis_cpu_us_per_job"))),
        cell(values(data, pid, cpu_sum)),
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
    candidates = [t.only_peer] if t.only_peer else [p for p in data.peer_ids() if p != US]
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


def render(data: Data) -> str:
    lines = header(data)
    rows = [main_row(data, pid) for pid in data.peer_ids()]
    lines += md_table(MAIN_HEADERS, rows, right=set(range(1, len(MAIN_HEADERS))))
    lines += legend(data) + memory_keys_line(data) + notes(data)
    lines += ["", "## Targets (Conveyor's median vs the best peer's median)", ""]
    target_headers = ["target", "Conveyor", "best peer", "ratio", "needed", "met"]
    lines += md_table(target_headers, [target_row(data, t) for t in TARGETS], right={1, 2, 3, 4})
    return "\n".join(lines) + "\n"


def from_manifest(path: Path) -> tuple[list[Path], Path | None]:
    if not path.exists():
        sys.exit(f"{path} not found: run `make bench` first, or pass --results")
    m = read_json(path)
    return [Path(p) for p in m["results"]], Path(m["memory"]) if m.get("memory") else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, nargs="*", help="runner results JSON files")
    ap.add_argument("--memory", type=Path, help="bench/memory.py JSON")
    ap.add_argument("--manifest", type=Path, default=MANIFEST, help="written by bench/run.py")
    ap.add_argument("--out", type=Path, help="also write the report to this file")
    a = ap.parse_args()
    results, memory = (a.results, a.memory) if a.results else from_manifest(a.manifest)
    data = load(results, a.memory or memory)
    if not data.runs:
        sys.exit("no results")
    text = render(data)
    sys.stdout.write(text)
    if a.out:
        a.out.write_text(text)


if __name__ == "__main__":
    main()
