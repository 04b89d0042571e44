"""Writers of list-append histories, run in spawned processes by tests/test_histories.py.

Each transaction reads whole lists and appends values no other transaction appends, in one of
the ways an application writes transactions (``with conn``, explicit BEGIN, autocommit
statements).  What every transaction did and saw is returned, for :mod:`histories` to check.
"""

from __future__ import annotations

import random
import time

from workers import _report_errors

import sqlite_concurrent

# Two table shapes: a rowid table whose keys exist up front, and a WITHOUT ROWID one whose
# rows the first append creates (an upsert).
TABLES = ("lists", "wlists")
SCHEMA = """
    PRAGMA journal_mode = WAL;
    CREATE TABLE lists (k INTEGER PRIMARY KEY, v TEXT NOT NULL DEFAULT '');
    CREATE TABLE wlists (k TEXT PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID;
"""
KEYS = 5  # per table: few, so that transactions meet


def key_sql(table: str, key: int) -> tuple[str, object]:
    return ("k", key) if table == "lists" else ("k", f"key{key}")


def _read(conn, table: str, key: int) -> list[int]:
    row = conn.execute(f"SELECT v FROM {table} WHERE k = ?", (key_sql(table, key)[1],)).fetchone()
    return [int(x) for x in row[0].split(",") if x] if row else []


def _append(conn, table: str, key: int, value: int) -> None:
    k = key_sql(table, key)[1]
    if table == "lists":
        conn.execute(
            "UPDATE lists SET v = CASE v WHEN '' THEN ? ELSE v || ',' || ? END WHERE k = ?",
            (str(value), str(value), k),
        )
    else:
        conn.execute(
            "INSERT INTO wlists(k, v) VALUES (?, ?) "
            "ON CONFLICT(k) DO UPDATE SET v = v || ',' || excluded.v",
            (k, str(value)),
        )


@_report_errors
def append_lists(start, path, me, count, seed, mode, lock_level, style, think):
    """``count`` transactions; returns ``(me, history)``, the history a list of
    ``(ops, outcome, began, ended)``, where each
    op is ``("r", table, key, values)`` or ``("a", table, key, value)`` and ``outcome`` is
    "ok", "conflict" (a ``ConflictError``) or another exception's class name."""
    r = random.Random(seed)
    isolation = "" if style == "with" else None
    conn = sqlite_concurrent.connect(
        path, timeout=60, isolation_level=isolation, mode=mode, lock_level=lock_level
    )
    conn.execute("PRAGMA synchronous = NORMAL")
    history = []
    start.wait()
    for i in range(count):
        n_ops = 1 if style == "autocommit" else r.randint(1, 4)
        plan = []
        for _ in range(n_ops):
            table, key = r.choice(TABLES), r.randrange(KEYS)
            if r.random() < 0.5:
                plan.append(("r", table, key))
            else:
                plan.append(("a", table, key, (me + 1) * 1_000_000 + i * 10 + len(plan)))
        ops: list[tuple] = []
        began = time.monotonic()
        try:
            if style == "begin":
                conn.execute(r.choice(("BEGIN", "BEGIN IMMEDIATE")))
            for step in plan:
                if step[0] == "r" and not conn.in_transaction and style == "with":
                    # The stdlib begins before DML only: a read before it is its own
                    # transaction.
                    t0 = time.monotonic()
                    seen = _read(conn, step[1], step[2])
                    history.append(([("r", step[1], step[2], seen)], "ok", t0, time.monotonic()))
                elif step[0] == "r":
                    ops.append(("r", step[1], step[2], _read(conn, step[1], step[2])))
                else:
                    # Recorded before it runs: a failed transaction's appends must not show.
                    ops.append(step)
                    _append(conn, step[1], step[2], step[3])
                if think and r.random() < 0.5:
                    time.sleep(think)
            if conn.in_transaction:
                conn.commit()
            outcome = "ok"
        except sqlite_concurrent.ConflictError:
            outcome = "conflict"
        except sqlite_concurrent.Error as e:
            outcome = type(e).__name__ + ": " + str(e)
        if outcome != "ok" and conn.in_transaction:
            conn.rollback()
        history.append((ops, outcome, began, time.monotonic()))
    conn.close()
    return me, history
