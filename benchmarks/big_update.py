"""One transaction updating every row of a big table: time and peak memory.

    python benchmarks/big_update.py                 # 200k rows of 40 and of 400 bytes
    python benchmarks/big_update.py --rows 50000 --widths 100

Each size runs in a fresh process, so ``ru_maxrss`` is that run's peak resident memory.  It
shows where a big transaction's memory goes: overlay pages stay within their budget (the rest
spills to the journal), while SQLite's session keeps every changed row's old values.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time


def _run(path: str, rows: int, width: int) -> dict:
    import apsw

    import sqlite_concurrent

    setup = apsw.Connection(path)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, a INTEGER, b TEXT)")
    setup.execute("BEGIN")
    setup.executemany("INSERT INTO t VALUES (?, ?, ?)", ((i, i, "x" * width) for i in range(rows)))
    setup.execute("COMMIT")
    setup.close()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    conn = sqlite_concurrent.connect(path)
    t0 = time.perf_counter()
    conn.execute("UPDATE t SET a = a + 1")
    overlay = conn._slot.overlay
    in_memory, spilled = len(overlay.pages), len(overlay.spilled)
    t1 = time.perf_counter()
    conn.commit()
    t2 = time.perf_counter()
    (changed,) = conn.execute("SELECT sum(a) - sum(id) FROM t").fetchone()
    conn.close()
    return {
        "rows": rows,
        "row_bytes": width,
        "db_mb": os.path.getsize(path) / 1e6,
        "update_s": t1 - t0,
        "commit_s": t2 - t1,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "baseline_rss_mb": base / 1024,
        "overlay_pages_in_memory": in_memory,
        "overlay_pages_spilled": spilled,
        "ok": changed == rows,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--widths", default="40,400")
    parser.add_argument("--one", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        with tempfile.TemporaryDirectory(prefix="sqlite-concurrent-big-") as tmp:
            print(json.dumps(_run(os.path.join(tmp, "big.db"), *args.one)))
        return 0
    results = []
    for width in (int(w) for w in args.widths.split(",")):
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(args.rows), str(width)],
            check=True,
            capture_output=True,
            text=True,
        )
        results.append(json.loads(out.stdout))
    print(
        "| rows | row bytes | db MB | UPDATE s | commit s | peak RSS MB "
        "| overlay pages in memory / spilled |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['rows']:,} | {r['row_bytes']} | {r['db_mb']:.0f} | {r['update_s']:.1f} | "
            f"{r['commit_s']:.1f} | {r['peak_rss_mb']:.0f} (baseline {r['baseline_rss_mb']:.0f}) | "
            f"{r['overlay_pages_in_memory']:,} / {r['overlay_pages_spilled']:,} |"
        )
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
