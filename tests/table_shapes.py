"""Every table shape SQLite has, and one script of writes for each, run the same way through
the stdlib and through sqlite_concurrent (``tests/test_table_shapes.py``; spawned workers
import this module by name)."""

from __future__ import annotations

import sqlite3
from typing import Any

import apsw

import sqlite_concurrent

# Every shape has columns a, b and v; what differs is the key and what hangs on the table.
SHAPES: dict[str, str] = {
    "rowid": "CREATE TABLE t (a, b, v)",
    "integer_pk": "CREATE TABLE t (a INTEGER PRIMARY KEY, b, v)",
    "autoincrement": "CREATE TABLE t (a INTEGER PRIMARY KEY AUTOINCREMENT, b, v)",
    "integer_pk_desc": "CREATE TABLE t (a INTEGER PRIMARY KEY DESC, b, v)",
    "text_pk": "CREATE TABLE t (a TEXT PRIMARY KEY, b, v)",
    "composite_pk": "CREATE TABLE t (a INTEGER, b VARCHAR(10), v TEXT, PRIMARY KEY (a, b))",
    "without_rowid": "CREATE TABLE t (a INTEGER, b TEXT, v, PRIMARY KEY (a)) WITHOUT ROWID",
    "without_rowid_composite": (
        "CREATE TABLE t (a INTEGER, b TEXT, v, PRIMARY KEY (b, a)) WITHOUT ROWID"
    ),
    "strict": "CREATE TABLE t (a TEXT PRIMARY KEY, b TEXT, v ANY) STRICT",
    "generated": (
        "CREATE TABLE t (a TEXT PRIMARY KEY, b, v, g AS (v || '/' || b) STORED, h AS (a + 1))"
    ),
    "unique_columns": "CREATE TABLE t (a TEXT PRIMARY KEY, b UNIQUE, v)",
    "unique_nullable_key": "CREATE TABLE t (a, b, v UNIQUE, PRIMARY KEY (a, b))",
    "triggers": (
        "CREATE TABLE t (a TEXT PRIMARY KEY, b, v);"
        "CREATE TABLE log (what, a, v);"
        "CREATE TRIGGER t_ins AFTER INSERT ON t BEGIN INSERT INTO log VALUES ('ins', new.a, new.v);"
        " END;"
        "CREATE TRIGGER t_upd AFTER UPDATE ON t BEGIN INSERT INTO log VALUES ('upd', new.a, new.v);"
        " END;"
        "CREATE TRIGGER t_del AFTER DELETE ON t BEGIN INSERT INTO log VALUES ('del', old.a, old.v);"
        " END"
    ),
    "foreign_keys": (
        "CREATE TABLE p (k PRIMARY KEY);"
        "WITH s(x) AS (VALUES ('x'), ('y'), ('z'), ('w'), ('q')), "
        "w(n) AS (VALUES (''), ('0'), ('1'), ('2'), ('3')) "
        "INSERT INTO p SELECT x || n FROM s, w;"
        "CREATE TABLE t (a TEXT PRIMARY KEY, b REFERENCES p(k) ON DELETE CASCADE, v)"
    ),
    "fts5": "CREATE VIRTUAL TABLE t USING fts5(a, b, v)",
    # Past SQLite's expression depth (1000) when a whole row is matched term by term.
    "wide": "CREATE TABLE t (a TEXT PRIMARY KEY, b, v, "
    + ", ".join(f"x{i} DEFAULT {i}" for i in range(1200))
    + ")",
}

# Tables whose rows are compared with their rowids (what a table scan orders by).
WITHOUT_ROWIDS = {"without_rowid", "without_rowid_composite"}

# The script: (statement, parameters, how); a commit or rollback is its own step.
SCRIPT: list[tuple[str, Any, str]] = [
    ("INSERT INTO t(a, b, v) VALUES (?, ?, ?)", (1, "x", "one"), "one"),
    ("INSERT INTO t(a, b, v) VALUES (?, ?, ?)", (2, None, "two"), "one"),
    ("INSERT INTO t(a, b, v) VALUES (?, ?, ?)", [(3, "y", "three"), (4, "z", "four")], "many"),
    ("INSERT INTO t(b, v) VALUES (?, ?)", ("w", "auto"), "one"),
    ("commit", None, "commit"),
    ("INSERT INTO t(a, b, v) VALUES (?, ?, ?)", (1, "x", "again"), "one"),
    ("UPDATE t SET v = v || '!' WHERE a = ?", (2,), "one"),
    ("DELETE FROM t WHERE a = ?", (3,), "one"),
    (
        "INSERT INTO t(a, b, v) VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET v = excluded.v",
        (2, "q", "upserted"),
        "one",
    ),
    ("INSERT OR REPLACE INTO t(a, b, v) VALUES (?, ?, ?)", (4, "z", "replaced"), "one"),
    ("INSERT OR REPLACE INTO t(a, b, v) VALUES (?, ?, ?)", (9, "z", "four"), "one"),
    ("UPDATE t SET rowid = rowid + 100 WHERE a = ?", (1,), "one"),
    ("SELECT a, b, v FROM t WHERE a = ?", (4,), "fetch"),
    ("commit", None, "commit"),
    ("INSERT INTO t(a, b, v) VALUES (?, ?, ?)", (5, "q", "rolled back"), "one"),
    ("rollback", None, "rollback"),
    ("INSERT INTO t(a, b, v) VALUES (?, ?, ?)", (6, "q", "six"), "one"),
    ("DELETE FROM t WHERE a = ?", (2,), "one"),
    ("INSERT INTO t(a, b, v) VALUES (?, ?, ?)", (2, None, "two again"), "one"),
    ("commit", None, "commit"),
]


def create(module: Any, path: str, shape: str, *, seed: bool = False) -> None:
    conn = module.connect(path)
    conn.executescript(SHAPES[shape])
    if seed:  # key 0: automatically assigned keys then lie above the writers' negative ones
        conn.execute("INSERT INTO t(a, b, v) VALUES (0, 'seed', 'seed')")
    conn.commit()
    conn.close()


def open_conn(module: Any, path: str, shape: str) -> Any:
    conn = module.connect(path, timeout=60)
    if shape == "foreign_keys":
        conn.execute("PRAGMA foreign_keys = ON")
    return conn


def run_script(conn: Any, script: list[tuple[str, Any, str]]) -> list[Any]:
    """What the application sees of each step: lastrowid and rowcount, rows, or the error."""
    seen: list[Any] = []
    for sql, params, how in script:
        try:
            if how in ("commit", "rollback"):
                getattr(conn, how)()
                seen.append(how)
            elif how == "many":
                cur = conn.executemany(sql, params)
                seen.append(("many", cur.rowcount))
            elif how == "fetch":
                seen.append(("rows", conn.execute(sql, params).fetchall()))
            else:
                cur = conn.execute(sql, params)
                seen.append(("done", cur.lastrowid, cur.rowcount))
        except Exception as e:  # compared with the stdlib's: class name and message
            seen.append(("error", type(e).__name__, str(e)))
    return seen


def contents(path: str, shape: str) -> dict[str, list[Any]]:
    """Every table's rows (with rowids where the table has them), read through APSW's SQLite
    (the stdlib's may not open a file this process has open through ours)."""
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
                " AND name NOT LIKE '\\_sqlite\\_concurrent%' ESCAPE '\\' ORDER BY name"
            )
        ]
        out = {}
        for table in tables:
            rowid = (
                ""
                if (table == "t" and shape in WITHOUT_ROWIDS) or table.startswith("t_")
                else "rowid, "
            )
            if shape == "fts5" and table.startswith("t_"):
                continue  # its shadow tables: compared through t itself
            out[table] = conn.execute(f"SELECT {rowid}* FROM {table}").fetchall()
        if shape in ("autoincrement",):
            out["sqlite_sequence"] = conn.execute("SELECT * FROM sqlite_sequence").fetchall()
        check = conn.execute("PRAGMA integrity_check").fetchone()[0]
        out["integrity"] = [check]
        return out
    finally:
        conn.close()


def key_base(writer: int) -> int:
    # Negative and far apart: with the seed row's key 0 (``create``), an automatically
    # assigned key (the largest rowid plus one) lies above every writer's own keys.
    return -1_000_000 * (writer + 1)


def worker_script(writer: int) -> list[tuple[str, Any, str]]:
    """The script with this writer's own keys and values, so that what each writer sees does
    not depend on the order writers went in: none shares a key or a unique value, and none
    moves a row to a rowid another may use."""

    def own(params: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(
            v + key_base(writer) if isinstance(v, int) else f"{v}{writer}" if v else v
            for v in params
        )

    out = []
    for sql, params, how in SCRIPT:
        if "rowid =" in sql:
            continue
        if how == "many":
            params = [own(p) for p in params]
        elif params is not None:
            params = own(params)
        out.append((sql, params, how))
    return out


def concurrent_writer(start: Any, queue: Any, engine: str, path: str, shape: str, writer: int):
    """One of several processes running its script: each transaction retried as a whole on a
    conflict (sqlite_concurrent) or busy (stdlib, timeout 60 s)."""
    try:
        module = sqlite_concurrent if engine == "ours" else sqlite3
        conn = open_conn(module, path, shape)
        start.wait(60)
        seen = []
        script = worker_script(writer)
        chunks, chunk = [], []
        for step in script:
            chunk.append(step)
            if step[2] in ("commit", "rollback"):
                chunks.append(chunk)
                chunk = []
        for chunk in chunks:
            for _ in range(200):
                got = run_script(conn, chunk)
                if not any(_retryable(g) for g in got):
                    break
                conn.rollback()  # a conflict: run the whole transaction again
            else:
                raise AssertionError(f"never committed: {got}")
            seen.extend(got)
        conn.close()
        queue.put((writer, seen))
    except BaseException as e:
        queue.put((writer, ("crashed", repr(e))))
        raise


def _retryable(seen: Any) -> bool:
    return seen[0] == "error" and (
        seen[1] in ("ConflictError", "DeadlockError") or "locked" in seen[2]
    )


def rowid_of(path: str, key: int) -> Any:
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        row = conn.execute("SELECT rowid FROM t WHERE a = ?", (key,)).fetchone()
        return row and row[0]
    finally:
        conn.close()
