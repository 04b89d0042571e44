"""The benchmark matrix: every (workload, think time, writers) cell on both engines, repeated.

Each run is a :func:`sqlite_concurrent.cli.stress.run` on a fresh database.  This module runs the
matrix, summarizes it into one row per cell (median txn/s of each engine, the ratio ours/stock
with its min-max over the repeats), and writes the summary as JSON, markdown and an SVG chart
(:mod:`.chart`).  ``sqlite-concurrent bench`` is the command line for it.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sqlite3
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import apsw

from . import chart
from .stress import DEFAULT_TIMEOUT, ENGINES, OURS_RETRIES, Result, run, validate


def validate_matrix(
    directory: str,
    workloads: Iterable[str],
    writer_counts: Iterable[int],
    think_values: Iterable[float],
    duration: float,
    repeats: int,
    *,
    accounts: int = 100,
    lock_level: str = "row",
    timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """Check every cell's arguments before the first run starts.

    :raises ValueError: with a one-line reason (the first bad cell's).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, not {repeats}")
    probe = os.path.join(directory, "probe.db")
    for workload in workloads:
        for writers in writer_counts:
            for think in think_values:
                validate(
                    probe, "ours", workload, writers, duration, think, accounts, lock_level, timeout
                )


def run_matrix(
    directory: str,
    workloads: Iterable[str],
    writer_counts: Iterable[int],
    think_values: Iterable[float],
    duration: float,
    repeats: int,
    *,
    seed: int = 0,
    accounts: int = 100,
    lock_level: str = "row",
    timeout: float = DEFAULT_TIMEOUT,
    on_result: Callable[[Result, int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[Result]:
    """Run every (workload, think, writers) cell for both engines, ``repeats`` times.

    Engines alternate, and their order flips from one cell to the next and one repeat to the
    next (stock-ours, ours-stock, ...), so drift in the machine's state hits both alike.  Each
    run gets a fresh database in ``directory``, deleted afterwards.

    :param on_result: called after each run with (result, runs done, runs in all).
    """
    matrix = [(w, t, n) for w in workloads for t in think_values for n in writer_counts]
    total, results = len(matrix) * repeats * 2, []
    for repeat in range(repeats):
        for c, (workload, think, writers) in enumerate(matrix):
            engines = ENGINES[::-1] if (repeat + c) % 2 == 0 else ENGINES
            for engine in engines:
                if should_stop is not None and should_stop():
                    return results
                db = os.path.join(directory, f"{workload}-{writers}-{think:g}-{engine}.db")
                r = run(
                    db,
                    engine,
                    workload,
                    writers,
                    duration,
                    think,
                    seed + repeat,
                    accounts=accounts,
                    lock_level=lock_level,
                    timeout=timeout,
                    should_stop=should_stop,
                )
                r.repeat = repeat
                results.append(r)
                for suffix in ("", "-wal", "-shm", "-locks", "-locks-wal", "-locks-shm"):
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(db + suffix)
                if on_result is not None:
                    on_result(r, len(results), total)
    return results


def cells(results: list[Result]) -> list[dict[str, Any]]:
    """One row per (workload, think, writers): median txn/s of each engine over the repeats,
    and the ratio ours/stock per repeat as median, min and max."""
    by_cell: dict[tuple[str, float, int], dict[str, dict[int, Result]]] = {}
    for r in results:
        key = (r.workload, r.think_ms, r.writers)
        by_cell.setdefault(key, {}).setdefault(r.engine, {})[r.repeat] = r
    rows = []
    for (workload, think, writers), by_engine in by_cell.items():
        ours, stock = by_engine.get("ours", {}), by_engine.get("stock", {})
        ratios = [
            ours[i].txn_per_s / stock[i].txn_per_s
            for i in sorted(ours.keys() & stock.keys())
            if stock[i].txn_per_s
        ]
        row: dict[str, Any] = {"workload": workload, "think_ms": think, "writers": writers}
        for name, runs in (("ours", ours), ("stock", stock)):
            rates = [r.txn_per_s for r in runs.values()]
            row[name] = {
                "txn_per_s": statistics.median(rates) if rates else 0.0,
                "min": min(rates, default=0.0),
                "max": max(rates, default=0.0),
                "p99_ms": statistics.median([r.p99_ms for r in runs.values()] or [0.0]),
                "fewest_commits": min((r.fewest_commits for r in runs.values()), default=0),
                "most_commits": max((r.most_commits for r in runs.values()), default=0),
                "conflicts": sum(sum(r.conflicts.values()) for r in runs.values()),
                "most_attempts": max((r.most_attempts for r in runs.values()), default=0),
                "ways": _ways(runs.values()),
                "repeats": len(runs),
                "ok": all(r.ok for r in runs.values()),
            }
        row["ratio"] = statistics.median(ratios) if ratios else None
        row["ratio_min"] = min(ratios, default=None)
        row["ratio_max"] = max(ratios, default=None)
        rows.append(row)
    return rows


def _ways(runs: Iterable[Result]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for r in runs:
        total.update(r.ways)
    return dict(sorted(total.items()))


def _fairness(engine: dict[str, Any]) -> str:
    most = engine["most_commits"]
    return f"{engine['fewest_commits'] / most:.2f}" if most else "-"


def ways_text(ways: dict[str, int]) -> str:
    """Share of ours' transactions run each way: ``d 97% o 2% e 1%``."""
    total = sum(ways.values())
    if not total:
        return "-"
    return " ".join(f"{way[0]} {100 * n / total:.0f}%" for way, n in ways.items() if n)


def markdown(rows: list[dict[str, Any]]) -> str:
    """The summary as a markdown table (the README's results table is this output)."""
    lines = [
        "| workload | think ms | writers | stock txn/s | ours txn/s | ours/stock (min-max) "
        "| stock / ours p99 ms | fewest/most (ours) | ways (ours) | checks |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for c in rows:
        ratio = (
            "-"
            if c["ratio"] is None
            else (f"**{c['ratio']:.2f}x** ({c['ratio_min']:.2f}-{c['ratio_max']:.2f})")
        )
        lines.append(
            f"| {c['workload']} | {c['think_ms']:g} | {c['writers']} "
            f"| {c['stock']['txn_per_s']:,.0f} | {c['ours']['txn_per_s']:,.0f} | {ratio} "
            f"| {c['stock']['p99_ms']:.1f} / {c['ours']['p99_ms']:.1f} "
            f"| {_fairness(c['ours'])} | {ways_text(c['ours']['ways'])} "
            f"| {'ok' if c['ours']['ok'] and c['stock']['ok'] else 'FAILED'} |"
        )
    return "\n".join(lines)


def report(
    results: list[Result], rows: list[dict[str, Any]], config: dict[str, Any], started: float
) -> dict[str, Any]:
    """The JSON document ``bench --json`` writes: the configuration, the machine, the summary
    ``cells`` and every run.  ``config`` holds the matrix's arguments; the engines' setup is
    added here."""
    lock_level = config.get("lock_level", "row")
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "config": {
            **config,
            "stock": "stdlib sqlite3, WAL, synchronous=NORMAL, BEGIN IMMEDIATE",
            "ours": f"sqlite_concurrent.connect(lock_level={lock_level!r}), synchronous=NORMAL, "
            f"transact(retries={OURS_RETRIES})",
        },
        "environment": environment(),
        "cells": rows,
        "results": [r.to_dict() for r in results],
    }


def environment(**extra: Any) -> dict[str, Any]:
    """Where a benchmark ran, for its JSON report (``extra`` adds to it)."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "stdlib_sqlite": sqlite3.sqlite_version,
        "apsw_sqlite": apsw.sqlite_lib_version(),
        **extra,
    }


def svg(rows: list[dict[str, Any]], duration: float, repeats: int, lock_level: str) -> str:
    """The chart of committed txn/s against writers, titled with how it was measured."""
    return chart.svg_chart(
        rows,
        "sqlite-concurrent vs stock SQLite: committed transactions per second",
        f"{duration:g} s per run, {repeats} repeats, {os.cpu_count()} CPU cores, "
        f"{platform.system()} {platform.machine()}, SQLite {apsw.sqlite_lib_version()}",
        lock_level,
    )
