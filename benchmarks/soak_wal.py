"""WAL soak (issue 7): 8 writers with overlapping transactions keep the WAL bounded, lose nothing.

Writers run read-then-update transactions on disjoint rows with work inside each, so some
transaction always holds a snapshot.  The parent never opens a sqlite_concurrent connection (two
SQLite libraries in one process cannot see each other's POSIX locks): it watches the WAL file
with os.stat and checks through a stock sqlite3 reader that the total never decreases.  At the
end every row must equal its writer's commit count and integrity_check must pass.

    python benchmarks/soak_wal.py                  # the full soak: 600 s, wal_limit 64 MiB
    python benchmarks/soak_wal.py --duration 30    # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import queue as queue_mod
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import checkpoint  # the same writer as the pause benchmark (benchmarks/ is on sys.path)
from _together import write_report

from sqlite_concurrent.cli.bench import environment
from sqlite_concurrent.cli.stress import percentile

MIB = 2**20
STAT_EVERY = 0.02  # os.stat between samples, so a peak between two samples is not missed


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    checkpoint.add_writer_options(parser, duration=600.0, wal_limit_mib=64.0)
    parser.add_argument(
        "--sample-every", type=float, default=0.5, help="reader sample period in s (default 0.5)"
    )
    parser.add_argument("--window", type=float, default=30.0, help="table window in s (default 30)")
    parser.add_argument(
        "--json",
        type=Path,
        default=Path("bench-results/soak_wal.json"),
        help="where to write the JSON results (default bench-results/soak_wal.json)",
    )
    return parser.parse_args(argv)


def _summary(times: list[float]) -> list[float]:
    """p50, p99, p99.9 and max, in milliseconds."""
    times = sorted(times)
    return [1000 * percentile(times, q) for q in (50, 99, 99.9)] + [
        1000 * (times[-1] if times else 0.0)
    ]


def run(args: argparse.Namespace, path: str) -> dict:
    checkpoint.setup(path, args.writers, args.rows)
    wal_limit = int(args.wal_limit_mib * MIB)
    start, results_q, procs = checkpoint.start_writers(args, path, wal_limit)
    # The stock reader: every snapshot it sees is a committed state (count fixed, total rising).
    reader = sqlite3.connect(path, timeout=60, isolation_level=None)
    time.sleep(1.0)  # let the children connect and warm up before the clock starts
    start.set()
    t_start = time.monotonic()
    series: list[dict] = []
    reader_problems: list[str] = []
    results: list[dict] = []
    last_total, prev_size, drops = -1, 0, 0
    interval_max = 0
    next_sample = t_start
    deadline = t_start + args.duration + 120
    while len(results) < len(procs):
        now = time.monotonic()
        if now > deadline:
            reader_problems.append("writers did not report within duration + 120 s")
            break
        size = checkpoint.wal_size(path)
        if size < prev_size:
            drops += 1
        prev_size = size
        interval_max = max(interval_max, size)
        if now >= next_sample:
            next_sample += args.sample_every
            try:
                total, count = reader.execute("SELECT sum(v), count(*) FROM t").fetchone()
            except sqlite3.Error as e:
                reader_problems.append(f"{now - t_start:.1f}s: {type(e).__name__}: {e}")
                total, count = None, None
            if count is not None and count != args.writers * args.rows:
                reader_problems.append(f"{now - t_start:.1f}s: row count {count}")
            if total is not None:
                if total < last_total:
                    reader_problems.append(
                        f"{now - t_start:.1f}s: total fell from {last_total} to {total}"
                    )
                last_total = total
            series.append(
                {
                    "t": round(now - t_start, 3),
                    "wal_bytes": size,
                    "wal_max_bytes": interval_max,
                    "total": total,
                }
            )
            interval_max = size
        with contextlib.suppress(queue_mod.Empty):
            results.append(results_q.get(timeout=STAT_EVERY))
        if not any(p.is_alive() for p in procs) and results_q.empty():
            if len(results) < len(procs):
                reader_problems.append("a writer exited without reporting")
            break
    elapsed = time.monotonic() - t_start
    for p in procs:
        p.join(30)

    writer_errors = [r["error"] for r in results if "error" in r]
    good = [r for r in results if "error" not in r]
    rows = dict(reader.execute("SELECT id, v FROM t").fetchall())
    lost = []
    for r in good:
        for row, count in enumerate(r["counts"]):
            got = rows[r["writer"] * args.rows + row]
            if got != count:
                lost.append({"row": r["writer"] * args.rows + row, "counted": count, "found": got})
    reader.close()
    check = sqlite3.connect(path)
    integrity = check.execute("PRAGMA integrity_check").fetchone()[0]
    check.close()

    commits = sum(sum(r["counts"]) for r in good)
    errors: dict[str, int] = {}
    for r in good:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    windows = []
    prev_total = 0
    n_windows = max(1, math.ceil(args.duration / args.window - 1e-9))
    for k in range(n_windows):
        w_start = k * args.window
        w_end = elapsed + 1 if k == n_windows - 1 else w_start + args.window
        in_w = [s for s in series if w_start <= s["t"] < w_end]
        totals = [s["total"] for s in in_w if s["total"] is not None]
        end_total = totals[-1] if totals else prev_total
        windows.append(
            {
                "from_s": w_start,
                "to_s": min(w_end, elapsed),
                "wal_max_bytes": max((s["wal_max_bytes"] for s in in_w), default=0),
                "commits": end_total - prev_total,
            }
        )
        prev_total = end_total
    if windows:  # commits after the last reader sample belong to the last window
        windows[-1]["commits"] += commits - prev_total
    return {
        "elapsed_s": elapsed,
        "commits": commits,
        "txn_per_s": commits / elapsed if elapsed else 0.0,
        "max_wal_bytes": max((s["wal_max_bytes"] for s in series), default=0),
        "wal_size_drops": drops,
        "restarts": sum(r["restarts"] for r in good),
        "failed_restarts": sum(r["failed_restarts"] for r in good),
        "writer_errors_by_class": errors,
        "writer_crashes": writer_errors,
        "reader_problems": reader_problems,
        "lost": lost,
        "integrity": integrity,
        "per_writer": [
            {k: r[k] for k in ("writer", "restarts", "failed_restarts")}
            | {
                "commits": sum(r["counts"]),
                "begin_ms": _summary(r["begins"]),
                "txn_ms": _summary(r["txns"]),
            }
            for r in good
        ],
        "windows": windows,
        "series": series,
    }


def _markdown(res: dict, wal_limit: int) -> str:
    lines = [
        "| window (s) | max WAL MB | commits |",
        "|---|---|---|",
    ]
    for w in res["windows"]:
        lines.append(
            f"| {w['from_s']:.0f}-{w['to_s']:.0f} | {w['wal_max_bytes'] / 1e6:.1f} "
            f"| {w['commits']:,} |"
        )
    ok = not (
        res["lost"] or res["writer_crashes"] or res["reader_problems"] or res["integrity"] != "ok"
    )
    begin_p99 = max((w["begin_ms"][1] for w in res["per_writer"]), default=0.0)
    begin_max = max((w["begin_ms"][3] for w in res["per_writer"]), default=0.0)
    lines += [
        "",
        f"- overall max WAL: {res['max_wal_bytes'] / 1e6:.1f} MB "
        f"({res['max_wal_bytes'] / MIB:.1f} MiB; wal_limit {wal_limit / MIB:.0f} MiB)",
        f"- commits: {res['commits']:,} in {res['elapsed_s']:.0f} s "
        f"({res['txn_per_s']:,.0f} txn/s)",
        f"- restart checkpoints: {res['restarts']} succeeded, {res['failed_restarts']} gave up; "
        f"WAL file shrank {res['wal_size_drops']} times",
        f"- BEGIN latency, worst writer: p99 {begin_p99:.1f} ms, max {begin_max:.0f} ms",
        f"- writer errors: {res['writer_errors_by_class'] or 'none'}; "
        f"reader problems: {len(res['reader_problems'])}; lost rows: {len(res['lost'])}; "
        f"integrity_check: {res['integrity']}",
        f"- verdict: {'ok' if ok else 'FAILED'}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="sqlite-concurrent-soak-") as tmp:
        res = run(args, os.path.join(tmp, "soak.db"))
    wal_limit = int(args.wal_limit_mib * MIB)
    print(_markdown(res, wal_limit))
    for problem in res["reader_problems"][:20]:
        print(f"reader problem: {problem}", file=sys.stderr)
    for crash in res["writer_crashes"]:
        print(f"writer crashed:\n{crash}", file=sys.stderr)
    report = {
        "benchmark": "soak_wal",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "config": {
            "duration_s": args.duration,
            "writers": args.writers,
            "rows_per_writer": args.rows,
            "wal_limit_bytes": wal_limit,
            "checkpoint_wait_s": args.checkpoint_wait,
            "think_ms": args.think_ms,
            "sample_every_s": args.sample_every,
            "stat_every_s": STAT_EVERY,
            "workload": "BEGIN; SELECT own row; sleep think; UPDATE own row; COMMIT "
            "(synchronous=NORMAL)",
        },
        "environment": environment(note="2-core machine shared with other work; timings are noisy"),
        "result": res,
    }
    write_report(args.json, report)
    failed = (
        res["lost"] or res["writer_crashes"] or res["reader_problems"] or res["integrity"] != "ok"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
