"""Conveyor on PostgreSQL against procrastinate and pgqueuer: the tables of `make bench-pg`
and `make bench-churn`, from the runner's results JSON, bench/txn_pg.py's JSON and the shared
pg_churn.py's JSON (as listed in .bench/last-run-pg.json, or given).

    python bench/report_pg.py                     # the last bench-pg / bench-churn
    python bench/report_pg.py --results a.json b.json --txn t.json --churn c.json

Cells as in bench/report.py: with 3 or more runs, median (min-max); with fewer, the values
separated by " / ". Ratios and targets compare medians (with 2 runs: their mean).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from report import (
    DASH,
    TIMES,
    US,
    Data,
    Getter,
    Json,
    cell,
    dig,
    fmt,
    latency_digits,
    md_table,
    middle,
    number,
    path,
    read_json,
    short_error,
    values,
)

REPO = Path(__file__).resolve().parent.parent
MANIFEST = REPO / ".bench" / "last-run-pg.json"
PG_SCHEMES = ("postgresql", "postgres")
CHURN_TARGET = 0.80  # drain after the churn / drain on a fresh table


def on_postgres(info: Json | None) -> bool:
    return (info or {}).get("url_scheme") in PG_SCHEMES


# ------------------------------------------------------------------ main table
@dataclass(frozen=True)
class Column:
    header: str
    get: Getter
    higher_is_better: bool
    digits: int | None = 0  # None: latency digits
    needs_api: str | None = None


COLUMNS = [
    Column("enqueue bulk jobs/s", path("enqueue", "bulk", "rate"), True, needs_api="bulk_api"),
    Column("enqueue single jobs/s", path("enqueue", "single", "rate"), True),
    Column(
        "enqueue gather-100 jobs/s",
        path("enqueue", "concurrent", "rate"),
        True,
        needs_api="concurrent_api",
    ),
    Column("drain jobs/s (1 worker)", path("drain", "rate"), True),
    Column("worker CPU µs/job", path("drain", "worker_cpu_us_per_job"), False),
    Column("PG backend CPU µs/job", path("drain", "pg_backend_cpu_us_per_job"), False),
    Column("PG server CPU µs/job", path("drain", "pg_all_cpu_us_per_job"), False),
    Column("latency p50 ms", path("latency", "p50_ms"), False, None),
    Column("latency p99 ms", path("latency", "p99_ms"), False, None),
]


def col_cell(data: Data, pid: str, c: Column) -> str:
    if c.needs_api and data.info(pid) is not None and not (data.info(pid) or {}).get(c.needs_api):
        return "n/a"
    vals = values(data, pid, c.get)
    return cell(vals, latency_digits(vals) if c.digits is None else c.digits)


def best(data: Data, c: Column) -> tuple[str | None, float | None]:
    scored = [
        (v, pid)
        for pid in data.peer_ids()
        if pid != US and (v := middle(values(data, pid, c.get))) is not None
    ]
    if not scored:
        return None, None
    v, pid = max(scored) if c.higher_is_better else min(scored)
    return pid, v


def ratio_row(data: Data) -> list[str]:
    """Conveyor's median / the best peer's median, per column (higher or lower is better)."""
    out = ["**Conveyor / best peer**", ""]
    for c in COLUMNS:
        ours = middle(values(data, US, c.get))
        pid, b = best(data, c)
        out.append(f"{ours / b:.2f}{TIMES} ({pid})" if ours is not None and b else DASH)
    return out


def version_of(data: Data, pid: str) -> str:
    info = data.info(pid) or {}
    v = str(info.get("version", DASH))
    if pid == US:
        v += f" ({info.get('url_scheme', '?')}://" + (
            f", psycopg {info['psycopg']})" if info.get("psycopg") else ")"
        )
    return v


def main_table(data: Data) -> list[str]:
    headers = ["peer", "version", *(c.header for c in COLUMNS)]
    rows = [
        [pid, version_of(data, pid), *(col_cell(data, pid, c) for c in COLUMNS)]
        for pid in data.peer_ids()
    ]
    rows.append(ratio_row(data))
    return md_table(headers, rows, right=set(range(2, len(headers))))


# ------------------------------------------------------------------ targets
@dataclass(frozen=True)
class Target:
    label: str
    get: Getter
    factor: float
    higher_is_better: bool
    needs_api: str | None = None


TARGETS = [
    Target(f"drain ≥ 2{TIMES} the faster peer's", path("drain", "rate"), 2.0, True),
    Target(
        f"bulk enqueue ≥ 2{TIMES} the faster peer's",
        path("enqueue", "bulk", "rate"),
        2.0,
        True,
        "bulk_api",
    ),
    Target(
        f"single enqueue ≥ 2{TIMES} the faster peer's", path("enqueue", "single", "rate"), 2.0, True
    ),
    Target("latency p50 ≤ the best peer's", path("latency", "p50_ms"), 1.0, False),
    Target("latency p99 ≤ the best peer's", path("latency", "p99_ms"), 1.0, False),
]


def target_row(data: Data, t: Target) -> list[str]:
    ours = middle(values(data, US, t.get))
    scored = []
    for pid in data.peer_ids():
        if pid == US or (t.needs_api and not (data.info(pid) or {}).get(t.needs_api)):
            continue
        if (v := middle(values(data, pid, t.get))) is not None:
            scored.append((v, pid))
    needed = f"{'≥' if t.higher_is_better else '≤'} {t.factor:.2f}{TIMES}"
    if not scored or ours is None:
        return [t.label, fmt(ours), DASH, DASH, needed, "no data"]
    b, pid = max(scored) if t.higher_is_better else min(scored)
    digits = 2 if max(abs(ours), abs(b)) < 100 else 0
    if b == 0:
        return [t.label, fmt(ours, digits), f"{fmt(b, digits)} ({pid})", DASH, needed, "no data"]
    ratio = ours / b
    met = ratio >= t.factor if t.higher_is_better else ratio <= t.factor
    mark = "" if on_postgres(data.info(US)) else " (not PostgreSQL)"
    return [
        t.label,
        fmt(ours, digits),
        f"{fmt(b, digits)} ({pid})",
        f"{ratio:.2f}{TIMES}",
        needed,
        ("yes" if met else "NO") + mark,
    ]


def suite_section(data: Data, server: str | None) -> list[str]:
    r0 = data.runs[0]
    info = data.info(US) or {}
    waited = [
        ", ".join(
            f"{p['id']} {fmt(number(dig(p, 'load_before', 'enqueue', 'load1')), 2)}/"
            f"{fmt(number(dig(p, 'load_before', 'drain', 'load1')), 2)}"
            for p in run["peers"]
        )
        for run in data.runs
        if any(dig(p, "load_before", "drain") for p in run["peers"])
    ]
    load = (
        "Load average (1 min) the runner went ahead with before each peer's enqueue / drain "
        "(it waits up to BENCH_WAIT_LOAD_MAX for it to fall below BENCH_WAIT_LOAD): "
        + "; ".join(waited)
        if waited
        else "Load average at the start of each run: "
        + "; ".join(", ".join(f"{x:.2f}" for x in r["loadavg_start"]) for r in data.runs)
    )
    lines = [
        "# Conveyor on PostgreSQL against procrastinate and pgqueuer",
        "",
        f"Runs: {len(data.runs)} ({', '.join(r['tag'] for r in data.runs)}); N = {r0['n']:,} "
        f"jobs per enqueue mode and drain; {r0['cpus']} CPUs (shared, noisy); private "
        f"{server or 'PostgreSQL'} cluster (initdb defaults); accounting on a private "
        f"redis-server {r0['redis_version']}; runner Python {r0['python']}.",
        load + ".",
    ]
    if info and not on_postgres(info):
        lines.append(
            f"**Conveyor ran on a {info.get('url_scheme')}:// stand-in "
            "(BENCH_PG_CONVEYOR_URL), not PostgreSQL: its row checks the pipeline, it is not a "
            "PostgreSQL measurement.**"
        )
    lines += ["", *main_table(data), ""]
    lines.append(
        "Enqueue: one producer process, N jobs into an empty database (bulk = the library's "
        "bulk API per 1,000; single = one awaited call at a time; gather-100 = asyncio.gather "
        "of 100 single calls). Drain: ONE worker process (concurrency 100) started with N jobs "
        "queued, (N - 1) / (last - first handler start). Worker CPU: the worker's process "
        "group; PG backend CPU: the backends connected to the peer's database; PG server CPU: "
        "the whole private cluster (WAL writer, checkpointer, autovacuum, every backend); all "
        "from the first to the last drained job, per job. Latency: 500 jobs 5 ms apart into "
        "the idle worker, handler start - enqueue. The ratio row is Conveyor's median over the "
        "best peer's (highest rate, lowest CPU or latency); the figures only mean something as "
        "ratios within one run."
    )
    lines += ["", "## Targets (Conveyor's median vs the best PostgreSQL peer's median)", ""]
    lines += md_table(
        ["target", "Conveyor", "best peer", "ratio", "needed", "met"],
        [target_row(data, t) for t in TARGETS],
        right={1, 2, 3, 4},
    )
    return lines


def notes(data: Data) -> list[str]:
    out = []
    for pid in data.peer_ids():
        for i, p in enumerate(data.rows(pid), 1):
            if p is None:
                continue
            if dup := dig(p, "drain", "duplicates"):
                out.append(f"- {pid}, run {i}: {dup} duplicate executions")
            out += [f"- {pid}, run {i}: {short_error(e)}" for e in p.get("errors", [])]
    return ["", "Errors and duplicates:", *out] if out else ["", "Errors and duplicates: none."]


# ------------------------------------------------------------------ transactional enqueue
def txn_section(txn: Json | None) -> list[str]:
    head = ["", "## Transactional enqueue (application row + its job in one transaction)", ""]
    if txn is None:
        return [*head, "Not measured in this run (BENCH_TXN=0)."]
    if "skipped" in txn:
        return [*head, f"Skipped: {txn['skipped']}."]
    if "error" in txn:
        return [*head, f"Failed: {txn['error']}."]
    counts: Json = txn.get("counts", {})
    rate: Json = txn.get("rate", {})
    kinds = [("row_only", "insert the row alone"), ("row_and_job", "insert the row + enqueue")]
    rows = []
    for key, label in kinds:
        if key not in rate:
            continue
        c = counts.get(key, {})
        rows.append(
            [
                label,
                cell([r[key] for r in txn["rounds"]]),
                fmt(number(c.get("statements_per_txn")), 2),
                fmt(number(c.get("round_trips_per_txn")), 2),
                fmt(number(c.get("server_xacts_per_txn")), 2),
                fmt(number(c.get("rows_inserted_per_txn")), 2),
            ]
        )
    added = txn.get("added_per_job")
    if added:

        def plus(key: str) -> str:
            v = number(added.get(key))
            return DASH if v is None else f"{v:+.2f}"

        rows.append(
            [
                "added by the enqueue",
                f"ratio {txn['ratio']:.2f}{TIMES}",
                plus("statements_per_txn"),
                plus("round_trips_per_txn"),
                plus("server_xacts_per_txn"),
                plus("rows_inserted_per_txn"),
            ]
        )
    lines = [*head]
    if txn.get("baseline_only"):
        lines.append("**Baseline only (harness check): the enqueue side was not measured.**")
        lines.append("")
    lines += md_table(
        ["transaction", "jobs/s", "statements", "round trips", "server xacts", "rows inserted"],
        rows,
        right={1, 2, 3, 4, 5},
    )
    lines += [
        "",
        f"One psycopg 3 AsyncConnection (autocommit; `conn.transaction()` = BEGIN ... COMMIT), "
        f"one transaction at a time; {txn['n']:,} transactions of each kind per round in blocks "
        f"of {txn.get('block', txn['n']):,} taking turns, {len(txn['rounds'])} rounds "
        "alternating which kind goes first; jobs/s per round, the ratio is the median of the "
        "per-round ratios (row + enqueue / row alone). Per "
        "transaction, over a separate traced pass: statements (Query + Execute messages) and "
        "round trips (send, then wait for the reply) from libpq's protocol trace of that "
        "connection; server xacts and rows inserted from pg_stat_database of that database (so "
        "work the queue did on connections of its own would show there too).",
    ]
    return lines


# ------------------------------------------------------------------ churn
def churn_section(churn: Json | None, server: str | None) -> list[str]:
    if churn is None:
        return []
    lines = [
        "",
        "## Churn: drain on a fresh table and after many jobs went through it",
        "",
        f"Shared pg_churn.py (tag {churn.get('tag')}), private {server or 'PostgreSQL'} cluster "
        f"(initdb defaults: autovacuum on); {churn.get('m', 0):,} jobs bulk-enqueued and "
        "drained by a fresh worker on a fresh table, then one worker runs while a producer "
        f"bulk-enqueues {churn.get('chunk', 0):,} at a time until "
        + ", ".join(f"{t:,}" for t in churn.get("total", []))
        + " jobs have gone through, then the same measurement. Library defaults, no manual "
        "VACUUM. Single runs.",
        "",
    ]
    headers = ["peer", "jobs through", "drain jobs/s", "vs fresh", "worker CPU µs/job",
               "PG server CPU µs/job", "pump jobs/s", "largest tables before the drain "
               "(live / dead rows, MB)", "autovacuums"]  # fmt: skip
    rows = []
    verdicts = []
    for p in churn.get("peers", []):
        pid = p["id"]
        fresh = number(dig(p, "fresh", "drain", "rate"))
        points = [("fresh", p.get("fresh") or {})] + [
            (f"{s['total']:,}", s) for s in p.get("after", [])
        ]
        for label, s in points:
            rate = number(dig(s, "drain", "rate"))
            vs = f"{rate / fresh:.0%}" if rate is not None and fresh and label != "fresh" else ""
            tables = sorted(
                (s.get("tables_before") or {}).items(), key=lambda kv: -(kv[1].get("bytes") or 0)
            )[:2]
            rows.append(
                [
                    pid,
                    label,
                    fmt(rate),
                    vs,
                    fmt(number(dig(s, "drain", "worker_cpu_us_per_job"))),
                    fmt(number(dig(s, "drain", "pg_all_cpu_us_per_job"))),
                    fmt(number(dig(s, "pump", "rate"))),
                    "; ".join(
                        f"{k} {v['live']:,} / {v['dead']:,}, {v['bytes'] / 1e6:.0f}"
                        for k, v in tables
                    )
                    or DASH,
                    ", ".join(f"{v.get('autovacuum', 0)}" for _, v in tables) or DASH,
                ]
            )
        if "error" in p:
            rows.append([pid, "error", short_error(p["error"]), "", "", "", "", "", ""])
        last = p.get("after", [])[-1:] if p.get("after") else []
        if pid == US and last and fresh:
            after = number(dig(last[0], "drain", "rate"))
            if after is not None:
                ratio = after / fresh
                mark = "" if on_postgres(p.get("info")) else " (not PostgreSQL)"
                verdicts.append(
                    f"Conveyor after {last[0]['total']:,} jobs: {fmt(after)} vs {fmt(fresh)} "
                    f"jobs/s fresh = **{ratio:.0%}** (target ≥ {CHURN_TARGET:.0%}: "
                    f"{'yes' if ratio >= CHURN_TARGET else 'NO'}{mark})."
                )
    lines += md_table(headers, rows, right={2, 3, 4, 5, 6})
    if verdicts:
        lines += ["", *verdicts]
    return lines


# ------------------------------------------------------------------ main
def render(data: Data | None, server: str | None, txn: Json | None, churn: Json | None,
           churn_server: str | None) -> str:  # fmt: skip
    lines: list[str] = []
    if data is not None and data.runs:
        lines += suite_section(data, server) + notes(data)
    else:
        lines += ["# Conveyor on PostgreSQL", "", "No suite run (run `make bench-pg`)."]
    lines += txn_section(txn)
    lines += churn_section(churn, churn_server)
    return "\n".join(lines) + "\n"


def maybe(p: Any) -> Json | None:
    return read_json(Path(p)) if p and Path(p).exists() else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, nargs="*", help="runner results JSON files")
    ap.add_argument("--txn", type=Path, help="bench/txn_pg.py JSON")
    ap.add_argument("--churn", type=Path, help="pg_churn.py JSON")
    ap.add_argument("--manifest", type=Path, default=MANIFEST, help="written by run_pg.py")
    ap.add_argument("--out", type=Path, help="also write the report to this file")
    a = ap.parse_args()
    m: Json = {}
    if not (a.results or a.txn or a.churn):
        if not a.manifest.exists():
            sys.exit(f"{a.manifest} not found: run `make bench-pg` first, or pass --results")
        m = read_json(a.manifest)
    results = a.results if a.results else [Path(p) for p in m.get("results") or []]
    data = Data([read_json(p) for p in results if p.exists()], {}) if results else None
    text = render(
        data,
        m.get("server"),
        maybe(a.txn or m.get("txn")),
        maybe(a.churn or m.get("churn")),
        m.get("churn_server"),
    )
    sys.stdout.write(text)
    if a.out:
        a.out.write_text(text)


if __name__ == "__main__":
    main()
