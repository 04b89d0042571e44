"""What the benchmarks share: a fresh WAL database, spawned writer processes that start on one
signal and report over one queue, and the JSON report each one writes."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

SPAWN = multiprocessing.get_context("spawn")


def wal_database(path: str, *statements: str) -> None:
    """Create the database at ``path`` in WAL mode, with ``statements`` run and committed (the
    stdlib's SQLite, before any writer of ours opens it)."""
    setup = sqlite3.connect(path)
    setup.execute("PRAGMA journal_mode=WAL")
    for sql in statements:
        setup.execute(sql)
    setup.commit()
    setup.close()


def chosen(ap: argparse.ArgumentParser, value: str, allowed: Sequence[str], what: str) -> list[str]:
    """The comma-separated names in ``value``, each one of ``allowed``; an argument error
    naming ``what`` otherwise."""
    names = value.split(",")
    if unknown := set(names) - set(allowed):
        ap.error(f"unknown {what}: {', '.join(sorted(unknown))}")
    return names


def run_together(
    target: Callable[..., None],
    args_list: Sequence[tuple[Any, ...]],
    *,
    timeout: float,
    settle: float = 0.0,
) -> list[Any]:
    """Start one process per ``args`` running ``target(*args, start, out)``, release them
    together, and return what each put on ``out`` (in order of arrival).

    :param timeout: how long to wait for each result.
    :param settle: seconds between starting the processes and releasing them, for writers that
        open their connections before waiting on ``start``.
    """
    start, out = SPAWN.Event(), SPAWN.Queue()
    procs = [SPAWN.Process(target=target, args=(*args, start, out)) for args in args_list]
    for p in procs:
        p.start()
    if settle:
        time.sleep(settle)
    start.set()
    results = [out.get(timeout=timeout) for _ in procs]
    for p in procs:
        p.join(60)
    return results


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Write a benchmark's JSON report, creating its folder, and say where on stderr."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nJSON written to {path}", file=sys.stderr)
