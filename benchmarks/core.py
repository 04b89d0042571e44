"""Core benchmark: stock SQLite against sqlite_concurrent, writers with work inside transactions.

For each workload and writer count, runs stock then ours (alternating, so drift in the machine's
state hits both engines alike), prints a markdown table and writes every result as JSON.
`sqlite-concurrent bench` does the same with repeats, ratio spreads and a chart.

    python benchmarks/core.py                         # the full run: 5 s per cell
    python benchmarks/core.py --duration 1 --writers 1,4   # a quick look
    python benchmarks/core.py --lock-levels row,page,table  # ours at each lock level

With several lock levels, each cell runs stock once, then ours at each level in the order given;
every level's ratio is against that one stock run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from _together import write_report

from sqlite_concurrent.cli import stress
from sqlite_concurrent.cli.bench import environment


def _csv(kind):
    def parse(text: str) -> list:
        return [kind(part) for part in text.split(",") if part.strip()]

    return parse


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workloads",
        type=_csv(str),
        default=["disjoint", "transfer"],
        help="comma-separated workloads (default: disjoint,transfer)",
    )
    parser.add_argument(
        "--writers",
        type=_csv(int),
        default=[1, 4, 8],
        help="comma-separated writer process counts (default: 1,4,8)",
    )
    parser.add_argument(
        "--lock-levels",
        type=_csv(str),
        default=["row"],
        help="comma-separated lock levels for ours: row, page, table (default: row)",
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per cell (default 5)")
    parser.add_argument(
        "--think-ms", type=float, default=2.0, help="work inside each transaction (default 2 ms)"
    )
    parser.add_argument("--accounts", type=int, default=100, help="transfer accounts (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the writers (default 0)")
    parser.add_argument(
        "--json",
        type=Path,
        default=Path("bench-results/core.json"),
        help="where to write the JSON results (default bench-results/core.json)",
    )
    args = parser.parse_args(argv)
    for level in args.lock_levels:
        if level not in stress.LOCK_LEVELS:
            parser.error(
                f"unknown lock level {level!r}; choose from {', '.join(stress.LOCK_LEVELS)}"
            )
    if not args.lock_levels:
        parser.error("--lock-levels needs at least one level")
    return args


def _lat(r: stress.Result) -> str:
    return f"{r.p50_ms:.1f} / {r.p99_ms:.1f} / {r.max_ms:.0f}"


def _markdown(cells: list[tuple[stress.Result, stress.Result]], show_level: bool) -> str:
    header = [
        "workload",
        "writers",
        *(["lock level"] if show_level else []),
        "stock txn/s",
        "ours txn/s",
        "ours/stock",
        "ours p50/p99/max ms",
        "stock p50/p99/max ms",
        "stock fewest/most commits",
        "ours fewest/most commits",
        "ours conflicts (retries)",
        "checks",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for stock, ours in cells:
        ratio = f"{ours.txn_per_s / stock.txn_per_s:.2f}x" if stock.txn_per_s else "-"
        conflicts = sum(ours.conflicts.values())
        checks = "ok" if stock.ok and ours.ok else "FAILED"
        row = [
            stock.workload,
            str(stock.writers),
            *([ours.lock_level] if show_level else []),
            f"{stock.txn_per_s:,.0f}",
            f"{ours.txn_per_s:,.0f}",
            ratio,
            _lat(ours),
            _lat(stock),
            f"{stock.fewest_commits:,} / {stock.most_commits:,}",
            f"{ours.fewest_commits:,} / {ours.most_commits:,}",
            f"{conflicts:,} ({ours.retries:,})",
            checks,
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    cells: list[tuple[stress.Result, stress.Result]] = []
    runs: list[stress.Result] = []
    problems: list[str] = []
    started = time.time()
    levels = args.lock_levels
    multi = levels != ["row"]
    plan = [("stock", None)] + [("ours", level) for level in levels]
    with tempfile.TemporaryDirectory(prefix="sqlite-concurrent-bench-") as tmp:
        for workload in args.workloads:
            for writers in args.writers:
                cell = []
                for engine, level in plan:
                    name = engine if level is None or not multi else f"{engine}-{level}"
                    db = os.path.join(tmp, f"{workload}-{writers}-{name}.db")
                    extra = {} if level is None else {"lock_level": level}
                    try:
                        r = stress.run(
                            db,
                            engine,
                            workload,
                            writers,
                            args.duration,
                            args.think_ms,
                            args.seed,
                            accounts=args.accounts,
                            **extra,
                        )
                    except (ValueError, stress.StressError) as e:
                        print(f"error: {e}", file=sys.stderr)
                        return 2
                    label = f"{engine}-{level}" if multi and level else engine
                    print(
                        f"{workload:>8} {writers:>2} writers {label:>10}: "
                        f"{r.txn_per_s:8,.0f} txn/s  p99 {r.p99_ms:7.1f} ms  "
                        f"{'ok' if r.ok else 'FAILED'}",
                        file=sys.stderr,
                        flush=True,
                    )
                    if not r.ok:
                        problems.append(
                            f"{label} {workload} x{writers}: invariant={r.invariant_ok} "
                            f"{r.invariant_detail} integrity={r.integrity_ok} {r.errors}"
                        )
                    cell.append(r)
                    runs.append(r)
                cells.extend((cell[0], ours) for ours in cell[1:])
    print(_markdown(cells, multi))
    report = {
        "benchmark": "core",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "config": {
            "workloads": args.workloads,
            "writers": args.writers,
            "duration_s": args.duration,
            "think_ms": args.think_ms,
            "accounts": args.accounts,
            "seed": args.seed,
            "stock": "stdlib sqlite3, WAL, synchronous=NORMAL, busy_timeout "
            f"{stress.DEFAULT_TIMEOUT:g} s, BEGIN IMMEDIATE",
            "lock_levels": levels,
            "ours": f"sqlite_concurrent.connect, lock_level={','.join(levels)}, "
            "synchronous=NORMAL, "
            f"transact(retries={stress.OURS_RETRIES})",
        },
        "environment": environment(),
        "results": [r.to_dict() for r in runs],
    }
    write_report(args.json, report)
    for problem in problems:
        print(f"check failed: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
