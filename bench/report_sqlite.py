"""The report of `make bench-sqlite`: the SQLite suite rows (medians of the runs), the contention
scenario, and issue 14's targets as a checklist of ratios taken within one run.

    .venv/bin/python bench/report_sqlite.py    # the last run (.bench/last-run-sqlite.json)
    .venv/bin/python bench/report_sqlite.py --manifest M --out REPORT.md

A ratio is computed in each suite run between rows of that run, then the median over the runs
is shown with its range: rates from different runs on this machine are not comparable.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MANIFEST = REPO / ".bench" / "last-run-sqlite.json"
HUEY = ("huey-sqlite", "huey-sqlite-process")
Row = dict[str, Any]
Pick = Callable[[Row], float]


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def spread(values: Sequence[float | None]) -> str:
    """Median (min-max) of the values that exist."""
    have = [v for v in values if v is not None]
    if not have:
        return "-"
    middle = fmt(statistics.median(have))
    return middle if len(have) == 1 else f"{middle} ({fmt(min(have))}-{fmt(max(have))})"


def get(row: Row | None, pick: Pick) -> float | None:
    if row is None:
        return None
    try:
        return float(pick(row))
    except (KeyError, TypeError, ValueError):
        return None


SUITE_COLUMNS: tuple[tuple[str, Pick], ...] = (
    ("bulk enq/s", lambda p: p["enqueue"]["bulk"]["rate"]),
    ("single enq/s", lambda p: p["enqueue"]["single"]["rate"]),
    ("concurrent enq/s", lambda p: p["enqueue"]["concurrent"]["rate"]),
    ("drain/s", lambda p: p["drain"]["rate"]),
    ("p50 ms", lambda p: p["latency"]["p50_ms"]),
    ("p99 ms", lambda p: p["latency"]["p99_ms"]),
    ("worker CPU µs/job", lambda p: p["drain"]["worker_cpu_us_per_job"]),
    ("files after run KiB", lambda p: p["sqlite_files"]["after_run"]["total"] / 1024),
    ("locked lines", lambda p: p["worker_log"]["locked_or_busy_lines"]),
)


def suite_table(runs: list[dict[str, Any]]) -> list[str]:
    ids: list[str] = []
    for run in runs:
        ids += [p["id"] for p in run["peers"] if p["id"] not in ids]
    head = ["row", *(name for name, _ in SUITE_COLUMNS)]
    out = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for pid in ids:
        rows = [row for run in runs if (row := peer(run, pid)) is not None]
        cells = [spread([get(row, pick) for row in rows]) for _, pick in SUITE_COLUMNS]
        out.append(f"| {pid} | " + " | ".join(cells) + " |")
    loads = ", ".join(f"{run['loadavg_start'][0]:.2f}" for run in runs)
    out += ["", f"{len(runs)} run(s); 1-minute load average at the start of each: {loads}"]
    errors = [f"{run['tag']} {p['id']}: {e}" for run in runs for p in run["peers"]
              for e in p.get("errors") or []]  # fmt: skip
    if errors:
        out.append("errors: " + "; ".join(e.strip().splitlines()[-1] for e in errors))
    return out


def peer(run: dict[str, Any], pid: str) -> Row | None:
    return next((p for p in run["peers"] if p["id"] == pid), None)


def best_huey(run: dict[str, Any], pick: Pick, *, lowest: bool = False) -> float | None:
    values = [v for pid in HUEY if (v := get(peer(run, pid), pick)) is not None]
    if not values:
        return None
    return min(values) if lowest else max(values)


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def run_ratios(runs: list[dict[str, Any]], ours: str, pick: Pick, *, lowest: bool) -> list[float]:
    found = [ratio(get(peer(run, ours), pick), best_huey(run, pick, lowest=lowest)) for run in runs]
    return [r for r in found if r is not None]


def check(label: str, values: Sequence[float], target: float, *, at_most: bool) -> str:
    if not values:
        return f"- [ ] {label}: no data"
    middle = statistics.median(values)
    met = middle <= target if at_most else middle >= target
    shown = spread(list(values))
    sign = "≤" if at_most else "≥"
    return f"- [{'x' if met else ' '}] {label}: {shown}x (target {sign} {target:g}x)"


def latencies(lat: dict[str, float] | None) -> str:
    return " / ".join(fmt((lat or {}).get(k)) for k in ("p50", "p99", "p999", "max"))


def contention_lines(data: dict[str, Any] | None) -> tuple[list[str], list[str]]:
    """(the table, the checklist items) of the contention scenario."""
    if data is None:
        return ["(not run: BENCH_SQLITE_CONTENTION=0, or the script failed; see the log)"], []
    head = ["lib", "enqueued ok", "errors / retries", "locked in worker log", "lost",
            "ran twice", "enqueue p50 / p99 / p99.9 / max ms", "producers' rate",
            "all drained after"]  # fmt: skip
    libs = {lib["id"]: lib for lib in data.get("libs", [])}
    # A contention script that also runs the producers on an idle file adds two columns.
    with_idle = any(lib.get("idle_enqueue_lat_ms") for lib in libs.values())
    if with_idle:
        head += ["same producers on an idle file: p50 / p99 / p99.9 / max ms", "their rate"]
    out = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for lib in libs.values():
        errors = sum((lib.get("producer_errors") or {}).values())
        row = (
            f"| {lib['id']} | {lib.get('enqueued_ok')} | {errors} / {lib.get('producer_retries')}"
            f" | {lib.get('worker_log_locked_or_busy')} | {lib.get('lost')} | {lib.get('twice')}"
            f" | {latencies(lib.get('enqueue_lat_ms'))} | {fmt(lib.get('enqueue_rate_total'))}/s"
            f" | {fmt(lib.get('all_done_wall_s'))} s |"
        )
        if with_idle:
            row += (
                f" {latencies(lib.get('idle_enqueue_lat_ms'))} |"
                f" {fmt(lib.get('idle_enqueue_rate_total'))}/s |"
            )
        out.append(row)
    load = data.get("loadavg_start") or [0.0]
    out += ["", f"{data.get('producers')} producers x {data.get('n_per_producer')} jobs; "
            f"load average at the start {load[0]:.2f}"]  # fmt: skip
    ours, huey = libs.get("conveyor-sqlite-2w"), libs.get("huey-sqlite-process")
    items: list[str] = []
    if ours and huey:
        p99 = ratio(get(ours, lambda x: x["enqueue_lat_ms"]["p99"]),
                    get(huey, lambda x: x["enqueue_lat_ms"]["p99"]))  # fmt: skip
        rate = ratio(ours.get("enqueue_rate_total"), huey.get("enqueue_rate_total"))
        items.append(check("contention: producers' enqueue p99 vs huey's", [p99] if p99 else [],
                           2.0, at_most=True))  # fmt: skip
        items.append(check("contention: producers' combined rate vs huey's",
                           [rate] if rate else [], 1.0, at_most=False))  # fmt: skip
        idle = ours.get("idle_enqueue_lat_ms")  # a contention script that measures it
        if isinstance(idle, dict) and idle.get("p99"):
            busy = ours["enqueue_lat_ms"]["p99"] / idle["p99"]
            items.append(check("contention: p99 with 2 busy workers vs on an idle file", [busy],
                               4.0, at_most=True))  # fmt: skip
        else:
            items.append("- [ ] contention: p99 with 2 busy workers vs on an idle file: not "
                         "measured by this contention script")  # fmt: skip
    return out, items


def render(manifest: dict[str, Any]) -> str:
    runs = [json.loads(Path(p).read_text()) for p in manifest.get("results") or []]
    contention_path = manifest.get("contention")
    contention = json.loads(Path(contention_path).read_text()) if contention_path else None
    single: Pick = lambda p: p["enqueue"]["single"]["rate"]  # noqa: E731
    checks = [
        check("single enqueue at our default (synchronous=NORMAL) vs huey's",
              run_ratios(runs, "conveyor-sqlite", single, lowest=False), 1.3, at_most=False),
        check("single enqueue at equal durability (?synchronous=full) vs huey's",
              run_ratios(runs, "conveyor-sqlite-full", single, lowest=False), 1.0,
              at_most=False),
        check("drain vs huey's", run_ratios(runs, "conveyor-sqlite",
              lambda p: p["drain"]["rate"], lowest=False), 2.0, at_most=False),
        check("idle latency p50 vs huey's", run_ratios(runs, "conveyor-sqlite",
              lambda p: p["latency"]["p50_ms"], lowest=True), 0.25, at_most=True),
        check("idle latency p99 vs huey's", run_ratios(runs, "conveyor-sqlite",
              lambda p: p["latency"]["p99_ms"], lowest=True), 0.25, at_most=True),
    ]  # fmt: skip
    table, contention_checks = contention_lines(contention)
    out = ["# Conveyor on SQLite beside huey's SqliteHuey", ""]
    out += ["## Suite (medians, min-max in brackets)", "", *suite_table(runs), ""]
    out += ["## Contention: 4 producers while 2 workers drain the same file", "", *table, ""]
    out += ["## Targets (issue 14): ratios within one run, median over the runs", ""]
    out += [*checks, *contention_checks, ""]
    out += ["huey's figure is the better of its two layouts in the same run (highest rate, "
            "lowest latency).", f"Written {manifest.get('written', '?')}."]  # fmt: skip
    return "\n".join(out) + "\n"


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=MANIFEST)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    try:
        manifest = json.loads(args.manifest.read_text())
    except OSError as exc:
        print(f"no SQLite bench run to report ({exc}); run `make bench-sqlite`", file=sys.stderr)
        return 1
    text = render(manifest)
    if args.out:
        args.out.write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
