"""Worker processes for the multi-process tests (importable by spawned children)."""

from __future__ import annotations

import functools
import random
import time
import traceback

import sqlite_concurrent


def _report_errors(fn):
    @functools.wraps(fn)
    def wrapper(start, queue, *args):
        try:
            queue.put(fn(start, *args))
        except BaseException:
            queue.put(("error", traceback.format_exc()))
            raise

    return wrapper


@_report_errors
def disjoint_updates(start, path, writer, rows, txns, think):
    """Read then update this writer's own rows; returns (writer, intervals, commits)."""
    conn = sqlite_concurrent.connect(path)
    conn.execute("PRAGMA synchronous=NORMAL")
    intervals = []
    start.wait()
    for i in range(txns):
        row_id = writer * rows + (i % rows)
        t0 = time.monotonic()
        conn.execute("BEGIN")
        (value,) = conn.execute("SELECT v FROM t WHERE id=?", (row_id,)).fetchone()
        time.sleep(think)
        conn.execute("UPDATE t SET v=? WHERE id=?", (value + 1, row_id))
        t1 = time.monotonic()
        conn.commit()
        intervals.append((t0, t1))
    conn.close()
    return writer, intervals


def _transfer(conn, a, b, amount):
    (bal,) = conn.execute("SELECT balance FROM accounts WHERE id=?", (a,)).fetchone()
    conn.execute("UPDATE accounts SET balance=? WHERE id=?", (bal - amount, a))
    conn.execute("UPDATE accounts SET balance=balance+? WHERE id=?", (amount, b))
    return amount


@_report_errors
def transfers(start, path, seed, count, accounts):
    rng = random.Random(seed)
    conn = sqlite_concurrent.connect(path)
    conn.execute("PRAGMA synchronous=NORMAL")
    start.wait()
    done = 0
    for _ in range(count):
        a, b = rng.sample(range(accounts), 2)
        conn.transact(_transfer, a, b, rng.randint(1, 50), retries=1000)
        done += 1
    conn.close()
    return done


@_report_errors
def timed_updates(start, path, writer, rows, duration, think, wal_limit):
    """Overlapping read-then-update transactions on this writer's rows for ``duration`` s.

    Returns (writer, per-row commit counts, errors by class name, begin latencies).
    """
    conn = sqlite_concurrent.connect(path, wal_limit=wal_limit)
    conn.execute("PRAGMA synchronous=NORMAL")
    counts = [0] * rows
    errors: dict[str, int] = {}
    begins = []
    start.wait()
    end = time.monotonic() + duration
    i = 0
    while time.monotonic() < end:
        row = i % rows
        i += 1
        try:
            t0 = time.monotonic()
            conn.execute("BEGIN")
            begins.append(time.monotonic() - t0)
            (value,) = conn.execute(
                "SELECT v FROM t WHERE id=?", (writer * rows + row,)
            ).fetchone()
            time.sleep(think)
            conn.execute("UPDATE t SET v=? WHERE id=?", (value + 1, writer * rows + row))
            conn.commit()
            counts[row] += 1
        except sqlite_concurrent.Error as e:
            errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
            conn.rollback()
    conn.close()
    return writer, counts, errors, begins
