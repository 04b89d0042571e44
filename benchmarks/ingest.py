"""Ingest benchmark (issue: ingest at full concurrency): many processes appending rows with
auto-assigned ids to one table, ours against stock SQLite in the same run.

Engines:
- stock: stdlib sqlite3, WAL, synchronous=NORMAL, busy_timeout 60 s; each row is a
  ``BEGIN IMMEDIATE`` transaction (with ``think`` inside it), or an autocommit INSERT at think 0.
- ours-txn: sqlite_concurrent, an explicit transaction per row with ``think`` inside it.
- ours-auto: sqlite_concurrent with isolation_level=None: each INSERT is its own statement
  and takes the single-statement fast path (think 0 only; with think there is nothing to hold).

Usage: python benchmarks/ingest.py [--writers 1,4,8] [--think-ms 0,2] [--duration 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time

from _together import run_together, wal_database


def _writer(engine, path, writer, duration, think, start, out):
    if engine == "stock":
        conn = sqlite3.connect(path, timeout=60, isolation_level=None)
        conn.execute("PRAGMA synchronous=NORMAL")
    else:
        import sqlite_concurrent

        conn = sqlite_concurrent.connect(
            path, isolation_level=None if engine == "ours-auto" else ""
        )
        conn.execute("PRAGMA synchronous=NORMAL")
    conflicts = 0
    lat = []
    start.wait()
    end = time.monotonic() + duration
    seq = 0
    while time.monotonic() < end:
        t0 = time.monotonic()
        while True:
            try:
                if engine == "stock":
                    if think:
                        conn.execute("BEGIN IMMEDIATE")
                    conn.execute("INSERT INTO events(writer, seq) VALUES (?, ?)", (writer, seq))
                    if think:
                        time.sleep(think)
                        conn.execute("COMMIT")
                elif engine == "ours-auto":
                    conn.execute("INSERT INTO events(writer, seq) VALUES (?, ?)", (writer, seq))
                else:
                    conn.execute("BEGIN")
                    conn.execute("INSERT INTO events(writer, seq) VALUES (?, ?)", (writer, seq))
                    if think:
                        time.sleep(think)
                    conn.commit()
                break
            except Exception as e:
                if type(e).__name__ != "ConflictError":
                    raise
                conflicts += 1
                conn.rollback()
        lat.append(time.monotonic() - t0)
        seq += 1
    conn.close()
    out.put((writer, seq, conflicts, lat))


def run(engine, writers, duration, think):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "ingest.db")
        wal_database(
            path,
            "CREATE TABLE events(id INTEGER PRIMARY KEY, writer INTEGER, seq INTEGER)",
        )
        results = run_together(
            _writer,
            [(engine, path, w, duration, think) for w in range(writers)],
            timeout=duration + 120,
        )
        check = sqlite3.connect(path)
        rows, distinct = check.execute("SELECT count(*), count(DISTINCT id) FROM events").fetchone()
        (ok,) = check.execute("PRAGMA integrity_check").fetchone()
        check.close()
    committed = sum(r[1] for r in results)
    lat = sorted(x for r in results for x in r[3])
    return {
        "engine": engine,
        "writers": writers,
        "think_ms": think * 1000,
        "txn_per_s": committed / duration,
        "conflicts": sum(r[2] for r in results),
        "p50_ms": 1000 * lat[len(lat) // 2] if lat else 0,
        "p99_ms": 1000 * lat[int(len(lat) * 0.99)] if lat else 0,
        "fewest": min(r[1] for r in results),
        "most": max(r[1] for r in results),
        "rows_ok": rows == distinct == committed,
        "integrity": ok,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--writers", default="1,4,8")
    ap.add_argument("--think-ms", default="0,2")
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--json", default="bench-results/ingest.json")
    args = ap.parse_args()
    cells = []
    for think_ms in [float(x) for x in args.think_ms.split(",")]:
        for writers in [int(x) for x in args.writers.split(",")]:
            engines = ["stock", "ours-txn"] + (["ours-auto"] if think_ms == 0 else [])
            for engine in engines:
                r = run(engine, writers, args.duration, think_ms / 1000)
                cells.append(r)
                print(
                    f"  {engine} writers={writers} think={think_ms}: {r['txn_per_s']:.0f}/s",
                    file=sys.stderr,
                )
    print(
        "| think ms | writers | engine | txn/s | vs stock | conflicts | p50/p99 ms | "
        "fewest/most | rows, integrity |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    ok = True
    for r in cells:
        stock = next(
            c
            for c in cells
            if c["engine"] == "stock"
            and c["writers"] == r["writers"]
            and c["think_ms"] == r["think_ms"]
        )
        ok &= r["rows_ok"] and r["integrity"] == "ok"
        print(
            f"| {r['think_ms']:g} | {r['writers']} | {r['engine']} | {r['txn_per_s']:,.0f} | "
            f"{r['txn_per_s'] / stock['txn_per_s']:.2f}x | {r['conflicts']} | "
            f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f} | {r['fewest']} / {r['most']} | "
            f"{'ok' if r['rows_ok'] else 'MISMATCH'}, {r['integrity']} |"
        )
    os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"cells": cells, "cpus": os.cpu_count(), "duration": args.duration}, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
