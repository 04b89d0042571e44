"""What a transaction costs when the CPU caches have gone cold since the last one.

    python benchmarks/cold_cache.py                 # gaps 0, 0.5, 2 and 5 ms, 400 txns each
    python benchmarks/cold_cache.py --gaps 0,2 --txns 200

One process runs transfer transactions (two reads, two updates) one after another, with a gap
before each: nothing, or the thread spinning on the clock (busy, so no CPU sleep state is
involved) or sleeping for the gap.  It reports the thread's CPU time inside each transaction,
ours and stock ``sqlite3`` (BEGIN IMMEDIATE, in its own file), and each one's cost relative to
no gap.

Why it exists: at 8 writers on 2 cores every writer runs cold, since seven others ran since its
last turn, and a transaction cost about twice its single-process CPU.  This shows the same
doubling with one process and nothing else running: on a shared virtual machine the caches
are evicted within milliseconds whatever this process does, so CPU per transaction grows with
the memory a transaction touches, not only with the instructions it runs.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import tempfile
import time
from typing import Any

import sqlite_concurrent

ACCOUNTS = 100


def _make(path: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)")
    conn.executemany("INSERT INTO accounts VALUES (?, 1000)", [(i,) for i in range(ACCOUNTS)])
    conn.close()


def _transfer(conn: Any, a: int, b: int) -> None:
    execute = conn.execute
    (x,) = execute("SELECT balance FROM accounts WHERE id=?", (a,)).fetchone()
    (y,) = execute("SELECT balance FROM accounts WHERE id=?", (b,)).fetchone()
    execute("UPDATE accounts SET balance=? WHERE id=?", (x - 1, a))
    execute("UPDATE accounts SET balance=? WHERE id=?", (y + 1, b))


def _gap(seconds: float, how: str) -> None:
    if seconds <= 0:
        return
    if how == "sleep":
        time.sleep(seconds)
        return
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _measure(run_one, gap: float, how: str, txns: int, rng: random.Random) -> float:
    """Median CPU microseconds of one transaction, over chunks of 50."""
    chunks = []
    for _ in range(max(1, txns // 50)):
        spent = 0.0
        for _ in range(50):
            a, b = rng.sample(range(ACCOUNTS), 2)
            _gap(gap, how)
            t0 = time.thread_time()
            run_one(a, b)
            spent += time.thread_time() - t0
        chunks.append(spent / 50 * 1e6)
    return statistics.median(chunks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gaps", default="0,0.5,2,5", help="gaps before each txn, in ms")
    parser.add_argument("--txns", type=int, default=400, help="transactions per cell")
    parser.add_argument("--how", choices=["spin", "sleep"], default="spin")
    args = parser.parse_args()
    gaps = sorted({0.0, *(float(g) / 1000 for g in args.gaps.split(","))})  # 0: the baseline

    with tempfile.TemporaryDirectory() as tmp:
        ours_path, stock_path = os.path.join(tmp, "ours.db"), os.path.join(tmp, "stock.db")
        _make(ours_path)
        _make(stock_path)
        ours = sqlite_concurrent.connect(ours_path)
        ours.execute("PRAGMA synchronous=NORMAL")
        stock = sqlite3.connect(stock_path, isolation_level=None)
        stock.execute("PRAGMA synchronous=NORMAL")

        def run_ours(a: int, b: int) -> None:
            ours.transact(_transfer, a, b)

        def run_stock(a: int, b: int) -> None:
            stock.execute("BEGIN IMMEDIATE")
            _transfer(stock, a, b)
            stock.execute("COMMIT")

        rng = random.Random(1)
        for run_one in (run_ours, run_stock):  # warm-up: first statements prepare
            for _ in range(200):
                run_one(*rng.sample(range(ACCOUNTS), 2))
        results = []
        for gap in gaps:
            # Alternate the engines within each cell so drift hits both alike.
            o1 = _measure(run_ours, gap, args.how, args.txns // 2, rng)
            s1 = _measure(run_stock, gap, args.how, args.txns // 2, rng)
            o2 = _measure(run_ours, gap, args.how, args.txns // 2, rng)
            s2 = _measure(run_stock, gap, args.how, args.txns // 2, rng)
            results.append((gap, (o1 + o2) / 2, (s1 + s2) / 2))
        ours.close()
        stock.close()

    base_ours, base_stock = results[0][1], results[0][2]
    print(f"CPU per transfer transaction (thread time, median of chunks), gap by {args.how}")
    print(f"{'gap ms':>7} {'ours us':>9} {'x no gap':>9} {'stock us':>9} {'x no gap':>9}")
    for gap, o, s in results:
        print(f"{gap * 1000:7.1f} {o:9.0f} {o / base_ours:9.2f} {s:9.0f} {s / base_stock:9.2f}")


if __name__ == "__main__":
    main()
