"""Writers of list-append histories, run in spawned processes by tests/test_histories.py.

Each transaction reads whole lists and appends values no other transaction appends, in one of
the ways an application writes transactions (``with conn``, explicit BEGIN, autocommit
statements).  What every transaction did and saw is returned, for :mod:`histories` to check.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
import time

from workers import _report_errors

import sqlite_concurrent

# Three table shapes: a rowid table whose keys exist up front, a WITHOUT ROWID one whose rows
# the first append creates (an upsert), and a table without a declared key where each append
# is a blind insert of a row, in rowid order (an automatically assigned rowid that nobody
# observes is assigned again at merge, after every row committed before: the order holds).
TABLES = ("lists", "wlists", "items")
INSERTED = ("items",)
SCHEMA = """
    PRAGMA journal_mode = WAL;
    CREATE TABLE lists (k INTEGER PRIMARY KEY, v TEXT NOT NULL DEFAULT '');
    CREATE TABLE wlists (k TEXT PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE items (k INTEGER NOT NULL, v INTEGER NOT NULL);
    CREATE INDEX items_k ON items (k);
"""
KEYS = 5  # per table: few, so that transactions meet


def key_sql(table: str, key: int) -> object:
    return f"key{key}" if table == "wlists" else key


def read(conn, table: str, key: int) -> list[int]:
    """The list ``key`` of ``table``, as ``conn`` sees it."""
    if table == "items":
        rows = conn.execute("SELECT v FROM items WHERE k = ? ORDER BY rowid", (key,)).fetchall()
        return [v for (v,) in rows]
    row = conn.execute(f"SELECT v FROM {table} WHERE k = ?", (key_sql(table, key),)).fetchone()
    return [int(x) for x in row[0].split(",") if x] if row else []


def _append(conn, table: str, key: int, value: int, *, many: bool = False) -> None:
    k = key_sql(table, key)
    execute = (lambda sql, params: conn.executemany(sql, [params])) if many else conn.execute
    if table == "items":
        execute("INSERT INTO items (k, v) VALUES (?, ?)", (k, value))
    elif table == "lists":
        execute(
            "UPDATE lists SET v = CASE v WHEN '' THEN ? ELSE v || ',' || ? END WHERE k = ?",
            (str(value), str(value), k),
        )
    else:
        execute(
            "INSERT INTO wlists(k, v) VALUES (?, ?) "
            "ON CONFLICT(k) DO UPDATE SET v = v || ',' || excluded.v",
            (k, str(value)),
        )


@_report_errors
def append_lists(start, path, me, count, seed, mode, lock_level, style, think):
    """``count`` transactions; returns ``(me, history)``, the history a list of
    ``(ops, outcome, began, ended)``, where each op is ``("r", table, key, values)`` or
    ``("a", table, key, value)`` and ``outcome`` is "ok", "conflict" (a ``ConflictError``) or
    another exception's class name."""
    history: list[tuple] = []
    conn = _connect(path, mode, lock_level, style)
    start.wait()
    _transactions(
        conn, me, count, seed, style, think, lambda *_: None, lambda txn, i: history.append(txn)
    )
    conn.close()
    return me, history


@_report_errors
def append_lists_in_threads(start, path, me, count, seed, lock_level, ways):
    """As :func:`append_lists`, one thread per ``(mode, style, think)`` of ``ways``, each with
    its own connection; returns ``[(me, history), ...]``, a ``me`` of its own per thread."""
    histories: list[tuple] = []
    errors: list[BaseException] = []
    start.wait()

    def run(t, mode, style, think):
        history: list[tuple] = []
        try:
            conn = _connect(path, mode, lock_level, style)
            _transactions(
                conn,
                me * 10 + t,
                count,
                seed * 10 + t,
                style,
                think,
                lambda *_: None,
                lambda txn, i: history.append(txn),
            )
            conn.close()
        except BaseException as e:
            errors.append(e)
        histories.append((me * 10 + t, history))

    threads = [threading.Thread(target=run, args=(t, *way)) for t, way in enumerate(ways)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return histories


def read_log(log: str) -> list[tuple]:
    """The history :func:`append_lists_logged` wrote to ``log``; a transaction it began and
    did not end (it was killed) has the outcome "unknown", its planned appends as its ops."""
    history, begun = [], {}
    with open(log) as f:
        for line in f:
            if not line.endswith("\n"):
                break  # killed while writing it
            record = json.loads(line)
            if "plan" in record:
                begun[record["i"]] = record
                continue
            if record["i"] is not None:
                del begun[record["i"]]
            history.append(tuple(record["txn"]))
    for record in begun.values():
        history.append((record["plan"], "unknown", record["began"], float("inf")))
    return history


def append_lists_logged(path, me, count, seed, mode, lock_level, style, think, log, progress):
    """As :func:`append_lists`, for a process that may be killed at any moment: each
    transaction's planned appends are written to the file ``log`` before it begins (a killed
    one's may or may not have committed, all or nothing), its outcome once it has one, and a
    byte goes to the pipe ``progress`` as each begins, for the test to choose when to kill."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def write(record):
        os.write(fd, (json.dumps(record) + "\n").encode())

    def started(i, plan, began):
        write({"i": i, "plan": [op for op in plan if op[0] == "a"], "began": began})
        progress.send_bytes(b"t")

    conn = _connect(path, mode, lock_level, style)
    _transactions(
        conn, me, count, seed, style, think, started, lambda txn, i: write({"i": i, "txn": txn})
    )
    conn.close()
    os.close(fd)


def _connect(path, mode, lock_level, style):
    """``mode`` as ``connect()`` takes it, or with "+group" after it for group commit; for
    the "stock" style, a connection of the stdlib's own sqlite3 (a writer that bypasses us)."""
    if style == "stock":
        return sqlite3.connect(path, timeout=60, isolation_level=None)
    isolation = "" if style == "with" else None
    mode, _, group = mode.partition("+")
    conn = sqlite_concurrent.connect(
        path,
        timeout=60,
        isolation_level=isolation,
        mode=mode,
        lock_level=lock_level,
        group_commit=bool(group),
    )
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def _transactions(conn, me, count, seed, style, think, started, ended):
    """Run ``count`` random transactions on ``conn`` in ``style``; ``started(i, plan,
    began)`` before each, ``ended((ops, outcome, began, ended), i)`` after each, and with
    ``None`` for ``i`` after each read that ran as a transaction of its own.

    Styles: "with" (``with conn``, the stdlib's implicit BEGIN before DML), "begin" (explicit
    BEGIN or BEGIN IMMEDIATE), "autocommit" (one statement each), "transact" (``transact()``,
    retried on conflicts), "savepoint" (each append in a savepoint, some rolled back to it),
    "many" (explicit BEGIN, each append through ``executemany``), "stock" (the stdlib's
    sqlite3, BEGIN IMMEDIATE), "ddl" (an index created or dropped before each BEGIN),
    "ddl-within" (explicit BEGIN, and the index created or dropped halfway through).
    """
    r = random.Random(seed)
    for i in range(count):
        n_ops = 1 if style == "autocommit" else r.randint(1, 4)
        plan = []
        for _ in range(n_ops):
            table, key = r.choice(TABLES), r.randrange(KEYS)
            if r.random() < 0.5:
                plan.append(("r", table, key))
            else:
                value = (me + 1) * 1_000_000 + i * 10 + len(plan)
                undone = style == "savepoint" and r.random() < 0.3
                plan.append(
                    ("a", table, key, value, "undone") if undone else ("a", table, key, value)
                )
        ops: list[tuple] = []
        began = time.monotonic()
        started(i, [step for step in plan if step[0] == "a" and len(step) == 4], began)

        def run(conn, plan=plan, ops=ops):
            ops.clear()  # a transact() attempt that conflicted left nothing
            _run_plan(conn, plan, ops, style, think, r, ended)

        try:
            if style == "transact":
                conn.transact(run, retries=20)
            else:
                if style == "stock":
                    conn.execute("BEGIN IMMEDIATE")  # else its first write may be refused
                elif style == "ddl":
                    # A schema change between transactions: an exclusive operation, which
                    # waits for the live transactions and fails those it outdates.
                    conn.execute(r.choice(_INDEX_DDL))
                    conn.execute("BEGIN")
                elif style in ("begin", "savepoint", "many", "ddl-within"):
                    conn.execute(r.choice(("BEGIN", "BEGIN IMMEDIATE")))
                run(conn)
                if conn.in_transaction:
                    conn.commit()
            outcome = "ok"
        except sqlite_concurrent.ConflictError:
            outcome = "conflict"
        except (sqlite_concurrent.Error, sqlite3.Error) as e:
            outcome = type(e).__name__ + ": " + str(e)
        if outcome != "ok" and conn.in_transaction:
            conn.rollback()
        ended((ops, outcome, began, time.monotonic()), i)


_INDEX_DDL = ("CREATE INDEX IF NOT EXISTS by_value ON items (v)", "DROP INDEX IF EXISTS by_value")


def _run_plan(conn, plan, ops, style, think, r, ended):
    for at, step in enumerate(plan):
        if style == "ddl-within" and at == len(plan) // 2:
            # The transaction becomes exclusive here, and reads the latest database after.
            conn.execute(r.choice(_INDEX_DDL))
        if step[0] == "r" and not conn.in_transaction and style == "with":
            # The stdlib begins before DML only: a read before it is its own transaction.
            t0 = time.monotonic()
            seen = read(conn, step[1], step[2])
            ended(([("r", step[1], step[2], seen)], "ok", t0, time.monotonic()), None)
        elif step[0] == "r":
            ops.append(("r", step[1], step[2], read(conn, step[1], step[2])))
        elif style == "savepoint":
            conn.execute("SAVEPOINT s")
            _append(conn, *step[1:4])
            if len(step) > 4:
                conn.execute("ROLLBACK TO s")
            else:
                ops.append(step)
            conn.execute("RELEASE s")
        else:
            # Recorded before it runs: a failed transaction's appends must not show.
            ops.append(step)
            _append(conn, *step[1:], many=style == "many")
        if think and r.random() < 0.5:
            time.sleep(think)
