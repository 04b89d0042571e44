"""Two threads committing rows into one shared-cache memory database, stdlib against ours.

Each thread opens its own connection to ``file:NAME?mode=memory&cache=shared`` and commits
``--rows`` one-row transactions as fast as it can, retrying (after a rollback) a transaction
refused as locked.  Reports, per module and run, the rows kept, the retries by error message,
and the time.  The stdlib's shared cache refuses with "database table is locked"; ours waits
within ``timeout`` (README, "Limits").

Usage: python benchmarks/shared_memory_writers.py [--rows 1000] [--runs 5]
"""

from __future__ import annotations

import argparse
import collections
import sqlite3
import threading
import time
import uuid
from typing import Any

import sqlite_concurrent


def _run(mod: Any, rows: int) -> tuple[int, dict[str, int], float]:
    uri = f"file:bench_{uuid.uuid4().hex}?mode=memory&cache=shared"
    keeper = mod.connect(uri, uri=True)
    keeper.execute("CREATE TABLE t (who TEXT, i INTEGER)")
    keeper.commit()
    start = threading.Event()
    retries: collections.Counter[str] = collections.Counter()

    def writer(who: str) -> None:
        conn = mod.connect(uri, uri=True, timeout=30)
        start.wait()
        for i in range(rows):
            while True:
                try:
                    conn.execute("INSERT INTO t VALUES (?, ?)", (who, i))
                    conn.commit()
                    break
                except mod.OperationalError as e:
                    retries[str(e)] += 1
                    conn.rollback()
        conn.close()

    threads = [threading.Thread(target=writer, args=(w,)) for w in ("a", "b")]
    for thread in threads:
        thread.start()
    began = time.perf_counter()
    start.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    kept = keeper.execute("SELECT count(*) FROM t").fetchone()[0]
    keeper.close()
    return kept, dict(retries), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000, help="rows each thread commits")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    for run in range(args.runs):
        for mod in (sqlite3, sqlite_concurrent):
            kept, retries, elapsed = _run(mod, args.rows)
            print(
                f"run {run + 1} {mod.__name__:17} kept {kept} of {2 * args.rows}"
                f"  retries {retries or 0}  {elapsed:.3f} s"
            )


if __name__ == "__main__":
    main()
