"""Table level, one hot table: how fast the table lock passes from writer to writer.

Each writer process runs, for ``--duration`` seconds, ``BEGIN IMMEDIATE``, reads a counter,
works ``--think-ms`` (a sleep), writes the counter back and commits: at the ``table`` level
its first read takes the table's write lock, so the writers queue for it first come, first
served and each commit hands the lock to the next in line.  ``stock``: the same through the
stdlib, where SQLite's busy handler decides who goes next.

Reported per way and writer count: commits/s, milliseconds per commit, and fewest/most
commits per writer.  Run alone, a transaction costs the think time and a little more; with
many writers the hand-off (waking the next in line, and the woken ones looking again) is what
each commit adds.

Usage: python benchmarks/table_handoff.py [--writers 1,8] [--think-ms 2] [--duration 3]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time

from _together import chosen, run_together, wal_database

WAYS = ("stock", "ours")


def _writer(way: str, path: str, duration: float, think: float, start, out) -> None:
    if way == "stock":
        conn = sqlite3.connect(path, isolation_level=None, timeout=60)
    else:
        import sqlite_concurrent

        conn = sqlite_concurrent.connect(path, isolation_level=None, lock_level="table")
    conn.execute("PRAGMA synchronous=NORMAL")
    start.wait()
    commits = 0
    end = time.monotonic() + duration
    while time.monotonic() < end:
        conn.execute("BEGIN IMMEDIATE")
        (v,) = conn.execute("SELECT v FROM counter WHERE id = 0").fetchone()
        time.sleep(think)
        conn.execute("UPDATE counter SET v = ? WHERE id = 0", (v + 1,))
        conn.execute("COMMIT")
        commits += 1
    conn.close()
    out.put(commits)


def run(way: str, writers: int, duration: float, think: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "handoff.db")
        wal_database(
            path,
            "CREATE TABLE counter(id INTEGER PRIMARY KEY, v INTEGER NOT NULL)",
            "INSERT INTO counter VALUES (0, 0)",
        )
        counts = run_together(
            _writer,
            [(way, path, duration, think) for _ in range(writers)],
            timeout=duration + 120,
            settle=1.0,
        )
        check = sqlite3.connect(path)
        (total,) = check.execute("SELECT v FROM counter").fetchone()
        check.close()
    assert total == sum(counts), (total, counts)  # none lost, none counted twice
    return {
        "per_s": sum(counts) / duration,
        "ms_per_commit": 1e3 * duration / sum(counts),
        "fewest_most": min(counts) / max(counts),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--writers", default="1,8", help="comma-separated writer counts")
    ap.add_argument("--think-ms", type=float, default=2.0)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--ways", default=",".join(WAYS), help=f"comma-separated, of {WAYS}")
    args = ap.parse_args()
    ways = chosen(ap, args.ways, WAYS, "ways")
    print("| writers | way | commits/s | ms/commit | fewest/most |")
    print("|---:|---|---:|---:|---:|")
    for writers in (int(w) for w in args.writers.split(",")):
        for way in ways:
            r = run(way, writers, args.duration, args.think_ms / 1000)
            print(
                f"| {writers} | {way} | {r['per_s']:,.0f} | {r['ms_per_commit']:.2f} "
                f"| {r['fewest_most']:.2f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
