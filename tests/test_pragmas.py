"""Pragmas that change what statements return, run through the stdlib and through ours.

``full_column_names`` and ``short_column_names`` name a SELECT's columns; ``count_changes`` makes
DML return its count as a row.  Each test runs the same code on each module and requires the
same transcript: descriptions, rows and ``rowcount`` (read before and after fetching), whichever
connection of ours the statement runs on (the reader, the merger of a direct transaction, the
private connection of an optimistic one, a private database).
"""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

import sqlite_concurrent

pytestmark = pytest.mark.timeout(60)

SETTINGS = [
    "PRAGMA full_column_names = 1",
    "PRAGMA short_column_names = 0",
    "PRAGMA count_changes = 1",
]


def _seen(cursor: Any) -> tuple[Any, ...]:
    names = [d[0] for d in cursor.description] if cursor.description else None
    before = cursor.rowcount
    return names, before, cursor.fetchall(), cursor.rowcount


def _transcript(mod: Any, path: str, setting: str, mode: str | None) -> list[Any]:
    kwargs = {"mode": mode} if mode and mod is sqlite_concurrent else {}
    conn = mod.connect(path, **kwargs)
    out: list[Any] = []
    try:
        conn.execute("CREATE TABLE t(a)")
        conn.execute("CREATE TABLE u(b)")
        conn.execute("INSERT INTO u VALUES (5)")
        conn.commit()
        conn.execute(setting)
        out.append(conn.execute(f"PRAGMA {setting.split()[1]}").fetchall())
        statements = [
            ("INSERT INTO t VALUES (?), (?)", (1, 2)),
            ("UPDATE t SET a = a + 1", ()),
            ("SELECT t.a, u.b FROM t, u ORDER BY t.a", ()),
            ("INSERT INTO t VALUES (7) RETURNING a", ()),
            ("DELETE FROM t WHERE a > 100", ()),
            ("WITH x(v) AS (SELECT 8) INSERT INTO t SELECT v FROM x", ()),
            ("UPDATE t SET a = a WHERE a = 8 RETURNING a", ()),
        ]
        for isolation_level in ("", None):
            conn.isolation_level = isolation_level
            for sql, params in statements:
                out.append((isolation_level, sql, _seen(conn.execute(sql, params))))
            if isolation_level is not None:
                conn.commit()
            cursor = conn.executemany("INSERT INTO t VALUES (?)", [(10,), (11,)])
            out.append((isolation_level, "executemany", _seen(cursor)))
            conn.commit()
        # A transaction that reads first, then writes and reads its own write.
        conn.isolation_level = None
        conn.execute("BEGIN")
        out.append(("read first", _seen(conn.execute("SELECT b FROM u"))))
        out.append(("then write", _seen(conn.execute("UPDATE u SET b = b + 1"))))
        out.append(("and read", _seen(conn.execute("SELECT u.b, t.a FROM u, t ORDER BY t.a"))))
        conn.execute("COMMIT")
        out.append(("after", conn.execute("SELECT a FROM t ORDER BY a").fetchall()))
    finally:
        conn.close()
    return out


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("mode", [None, "optimistic"])
def test_file_database_answers_as_the_stdlib(tmp_path, setting, mode):
    stock = _transcript(sqlite3, str(tmp_path / "stock.db"), setting, mode)
    ours = _transcript(sqlite_concurrent, str(tmp_path / "ours.db"), setting, mode)
    assert ours == stock


@pytest.mark.parametrize("setting", SETTINGS)
def test_private_database_answers_as_the_stdlib(setting):
    assert _transcript(sqlite_concurrent, ":memory:", setting, None) == _transcript(
        sqlite3, ":memory:", setting, None
    )


def test_count_changes_off_again_returns_no_rows(tmp_path):
    def run(mod: Any, path: str) -> list[Any]:
        conn = mod.connect(path)
        try:
            conn.execute("CREATE TABLE t(a)")
            conn.execute("PRAGMA count_changes = 1")
            conn.execute("PRAGMA count_changes = 0")
            with conn:
                cursor = conn.execute("INSERT INTO t VALUES (1)")
            return [_seen(cursor), conn.execute("PRAGMA count_changes").fetchall()]
        finally:
            conn.close()

    assert run(sqlite_concurrent, str(tmp_path / "ours.db")) == run(
        sqlite3, str(tmp_path / "stock.db")
    )


def test_ours_machinery_is_not_counted(tmp_path):
    """Under count_changes, ours still merges, rolls back to savepoints, and commits: its own
    statements on the same connections return no rows to trip over."""
    path = str(tmp_path / "app.db")
    conn = sqlite_concurrent.connect(path, mode="optimistic", isolation_level=None)
    other = sqlite_concurrent.connect(path, isolation_level=None)
    try:
        conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, a)")
        conn.execute("PRAGMA count_changes = 1")
        conn.execute("BEGIN")
        assert conn.execute("INSERT INTO t(a) VALUES (1)").fetchall() == [(1,)]
        conn.execute("SAVEPOINT s")
        conn.execute("INSERT INTO t(a) VALUES (2)")
        conn.execute("ROLLBACK TO s")
        conn.execute("RELEASE s")
        other.execute("INSERT INTO t(a) VALUES (3)")  # a merge lands first
        conn.execute("COMMIT")
        assert other.execute("SELECT a FROM t ORDER BY a").fetchall() == [(1,), (3,)]
    finally:
        other.close()
        conn.close()
