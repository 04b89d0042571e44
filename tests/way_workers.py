"""Unmodified stdlib-style writers, run in spawned processes by tests/test_ways.py.

Each is written as an application would write it for the stdlib (no retry loop, default
isolation level), and imports the module it is given as ``sqlite3``: the stdlib's, or ours.
Each returns how many of its transactions raised, by exception class name.
"""

from __future__ import annotations

import collections
import importlib
import time

from workers import _report_errors


def _connect(module: str, path: str, **kwargs):
    sqlite3 = importlib.import_module(module)
    return sqlite3, sqlite3.connect(path, timeout=60, **kwargs)


def _run(start, path, module, count, body):
    """Open a connection, wait for the others, then run ``body(conn, i)`` ``count`` times:
    how many raised, by exception class name."""
    _, conn = _connect(module, path)
    start.wait()
    errors: collections.Counter[str] = collections.Counter()
    for i in range(count):
        try:
            body(conn, i)
        except Exception as e:  # what the application would see
            errors[type(e).__name__] += 1
            if conn.in_transaction:
                conn.rollback()
    conn.close()
    return dict(errors)


@_report_errors
def counter(start, path, module, me, count, think):
    """``with conn: UPDATE c SET n = n + 1``: the most common write there is."""

    def body(conn, i):
        with conn:
            conn.execute("UPDATE c SET n = n + 1 WHERE id = 1")
            if think:
                time.sleep(think)

    return _run(start, path, module, count, body)


@_report_errors
def order_with_lines(start, path, module, me, count, think):
    """An order, its id read back, and its lines pointing at it."""

    def body(conn, i):
        cur = conn.execute("INSERT INTO orders(customer) VALUES (?)", (f"{me}-{i}",))
        order_id = cur.lastrowid
        if think:
            time.sleep(think)
        conn.executemany(
            "INSERT INTO lines(order_id, item) VALUES (?, ?)", [(order_id, k) for k in range(3)]
        )
        conn.commit()

    return _run(start, path, module, count, body)


@_report_errors
def write_then_read_back(start, path, module, me, count, think):
    """A write, then a read of a shared row and its new value written back: the stdlib holds
    its write lock from the first write on, so the read is current and no increment is lost."""

    def body(conn, i):
        conn.execute("INSERT INTO log(who) VALUES (?)", (me,))
        (n,) = conn.execute("SELECT n FROM c WHERE id = 1").fetchone()
        if think:
            time.sleep(think)
        conn.execute("UPDATE c SET n = ? WHERE id = 1", (n + 1,))
        conn.commit()

    return _run(start, path, module, count, body)


@_report_errors
def transact_counter(start, path, me, count, think, mode):
    """Long (``think``) or short transactions on one hot row, each through ``transact``:
    how many ran each way, and the most attempts any of them took."""
    import sqlite_concurrent

    conn = sqlite_concurrent.connect(path, timeout=60, mode=mode)
    attempts = []

    def bump(c):
        attempts[-1] += 1
        c.execute("INSERT INTO log(who) VALUES (?)", (me,))
        if think:
            time.sleep(think)
        c.execute("UPDATE c SET n = n + 1 WHERE id = 1")

    start.wait()
    for _ in range(count):
        attempts.append(0)
        conn.transact(bump, retries=10)
    ways = dict(conn.ways)
    conn.close()
    return {"me": me, "ways": ways, "most_attempts": max(attempts)}
