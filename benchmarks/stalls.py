"""Stalls and the WAL bound (issue 17): the longest gap between commits, and the WAL's peak
against ``wal_limit``, with 8 writers; and what a stock reader holding a read transaction costs.

Each writer process runs short transactions (update one of its own rows, insert a 2 KB row) and
records the time of each commit.  The parent merges the commit times of all writers and reports
the longest gap between two consecutive commits (a stall holds every writer back, so it shows
as a gap), and samples the WAL's size with os.stat every 2 ms.  Cases:

- ``page``: lock_level="page", synchronous=NORMAL;
- ``row-full``: lock_level="row", synchronous=FULL (group commit);
- ``reader``: the ``page`` writers with a small ``wal_limit``, without and then with a stock
  sqlite3 process holding one read transaction open the whole time: commits per second.

    python benchmarks/stalls.py                        # every case, 15 s each
    python benchmarks/stalls.py --cases page --duration 5
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sqlite3
import sys
import tempfile
import time
import traceback
from pathlib import Path

from _together import SPAWN

import sqlite_concurrent
from sqlite_concurrent.cli.bench import environment

MIB = 2**20
CASES = ("page", "row-full", "reader")


def writer_proc(start, out, path, writer, duration, level, synchronous, wal_limit) -> None:
    try:
        conn = sqlite_concurrent.connect(path, lock_level=level, wal_limit=wal_limit)
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("BEGIN")
        conn.execute("SELECT v FROM t WHERE id=?", (writer,)).fetchone()
        conn.rollback()
        commits: list[float] = []
        errors = 0
        start.wait()
        end = time.monotonic() + duration
        while time.monotonic() < end:
            try:
                conn.execute("BEGIN")
                conn.execute("UPDATE t SET v=v+1 WHERE id=?", (writer,))
                conn.execute("INSERT INTO log(writer, pad) VALUES (?, randomblob(2000))", (writer,))
                conn.commit()
                commits.append(time.monotonic())
            except sqlite_concurrent.Error:
                errors += 1
                conn.rollback()
        cp = conn._checkpointer
        counters = {
            k: getattr(cp, k, None)
            for k in ("restarts", "failed_restarts", "gate_closures", "pinned_skips")
        }
        conn.close()
        out.put({"writer": writer, "commits": commits, "errors": errors, **counters})
    except BaseException:
        out.put({"writer": writer, "error": traceback.format_exc()})
        raise


def reader_proc(path, ready, done) -> None:
    """A stock reader that keeps one read transaction open until told to stop."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    conn.execute("SELECT count(*) FROM t").fetchone()
    ready.set()
    done.wait()
    conn.execute("COMMIT")
    conn.close()


def setup(path: str, writers: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER NOT NULL)")
    conn.execute("CREATE TABLE log(id INTEGER PRIMARY KEY, writer INTEGER, pad BLOB)")
    conn.executemany("INSERT INTO t VALUES (?, 0)", [(i,) for i in range(writers)])
    conn.commit()
    conn.close()


def wal_size(path: str) -> int:
    try:
        return os.stat(path + "-wal").st_size
    except FileNotFoundError:
        return 0


def run(args: argparse.Namespace, level: str, synchronous: str, wal_limit: int, reader: bool):
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        path = os.path.join(d, "stalls.db")
        setup(path, args.writers)
        stop_reader = SPAWN.Event()
        reader_p = None
        if reader:
            ready = SPAWN.Event()
            reader_p = SPAWN.Process(target=reader_proc, args=(path, ready, stop_reader))
            reader_p.start()
            ready.wait(30)
        start, out = SPAWN.Event(), SPAWN.Queue()
        procs = [
            SPAWN.Process(
                target=writer_proc,
                args=(start, out, path, w, args.duration, level, synchronous, wal_limit),
            )
            for w in range(args.writers)
        ]
        for p in procs:
            p.start()
        time.sleep(2.0)  # let the writers open their connections
        peak = 0
        start.set()
        t0 = time.monotonic()
        while time.monotonic() - t0 < args.duration:
            peak = max(peak, wal_size(path))
            time.sleep(0.002)
        results = [out.get(timeout=args.duration + 120) for _ in procs]
        for p in procs:
            p.join(60)
        stop_reader.set()
        if reader_p is not None:
            reader_p.join(30)
    failed = [r["error"] for r in results if "error" in r]
    if failed:
        sys.exit("a writer failed:\n" + failed[0])
    times = sorted(t for r in results for t in r["commits"])
    gaps = [b - a for a, b in itertools.pairwise(times)]
    gaps.sort(reverse=True)
    total = lambda k: sum(r[k] for r in results) if results[0][k] is not None else None  # noqa: E731
    return {
        "level": level,
        "synchronous": synchronous,
        "wal_limit": wal_limit,
        "reader": reader,
        "commits": len(times),
        "commits_per_s": round(len(times) / args.duration, 1),
        "errors": sum(r["errors"] for r in results),
        "longest_gap_ms": round(1000 * gaps[0], 1) if gaps else None,
        "gaps_over_500ms": sum(1 for g in gaps if g >= 0.5),
        "wal_peak_bytes": peak,
        "wal_peak_over_limit": peak > wal_limit,
        "restarts": total("restarts"),
        "failed_restarts": total("failed_restarts"),
        "gate_closures": total("gate_closures"),
        "pinned_skips": total("pinned_skips"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per run")
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--cases", default=",".join(CASES), help=f"of {', '.join(CASES)}")
    parser.add_argument("--wal-limit-mib", type=float, default=16.0, help="page and row-full")
    parser.add_argument("--reader-wal-limit-mib", type=float, default=4.0, help="reader case")
    parser.add_argument("--dir", default=None, help="where the databases go")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    limit = int(args.wal_limit_mib * MIB)
    small = int(args.reader_wal_limit_mib * MIB)
    results = []
    for case in args.cases.split(","):
        if case == "page":
            runs = [("page", "NORMAL", limit, False)]
        elif case == "row-full":
            runs = [("row", "FULL", limit, False)]
        elif case == "reader":
            runs = [("page", "NORMAL", small, False), ("page", "NORMAL", small, True)]
        else:
            sys.exit(f"unknown case {case!r}")
        for level, sync, wal_limit, reader in runs:
            res = {"case": case, **run(args, level, sync, wal_limit, reader)}
            results.append(res)
            print(json.dumps(res), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"environment": environment(), "runs": results}, indent=1))


if __name__ == "__main__":
    main()
