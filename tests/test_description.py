"""``cursor.description`` follows the schema, as the stdlib's does, on file databases.

sqlite-utils reads a table's columns from ``SELECT *``; a stale description there made it drop
columns.  Statements come from a statement cache, so each scenario runs the same SQL text before
and after the schema changes.
"""

from __future__ import annotations

import sqlite3

import pytest

import sqlite_concurrent

pytestmark = pytest.mark.timeout(60)


def _seen(cur):
    names = None if cur.description is None else [d[0] for d in cur.description]
    rows = cur.fetchall()
    after = None if cur.description is None else [d[0] for d in cur.description]
    return names, rows, after


def _scenario(mod, path, isolation_level):
    conn = mod.connect(path, isolation_level=isolation_level)
    if mod is sqlite3:
        conn.execute("PRAGMA journal_mode=WAL")
    other = mod.connect(path)
    out = []

    def look(label, sql="SELECT * FROM t", on=None, params=()):
        c = on or conn
        out.append((label, *_seen(c.execute(sql, params)), c.in_transaction))

    conn.execute("CREATE TABLE t (a)")
    conn.execute("CREATE TABLE empty (a)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    look("start")
    look("empty", "SELECT * FROM empty")
    conn.execute("ALTER TABLE t ADD COLUMN b")
    conn.execute("ALTER TABLE empty ADD COLUMN b")
    look("own alter")
    look("own alter, no rows", "SELECT * FROM empty")
    conn.commit()
    conn.execute("INSERT INTO t VALUES (2, 3)")
    look("transaction")
    conn.execute("ALTER TABLE t ADD COLUMN c")
    look("alter in a transaction")
    conn.commit()
    look("committed")
    cur = conn.cursor()
    cur.execute("SELECT * FROM t").fetchall()
    other.execute("ALTER TABLE t ADD COLUMN d")
    other.execute("ALTER TABLE empty ADD COLUMN d")
    other.commit()
    out.append(("same cursor, other's alter", *_seen(cur.execute("SELECT * FROM t"))))
    look("other's alter")
    look("other's alter, no rows", "SELECT * FROM empty")
    look("other's alter, filtered", "SELECT * FROM t WHERE rowid = ?", params=(99,))
    other.execute("DROP TABLE t")
    other.execute("CREATE TABLE t (x, y, z, w)")  # as many columns, other names
    other.execute("DROP TABLE empty")
    other.execute("CREATE TABLE empty (e)")
    other.commit()
    look("recreated by another")
    look("recreated by another, no rows", "SELECT * FROM empty")
    look("filtered again", "SELECT * FROM t WHERE rowid = ?", params=(99,))
    conn.execute("DROP TABLE t")
    conn.execute("CREATE TABLE t (k, v)")
    conn.execute("INSERT INTO t VALUES ('k', 'v')")
    look("recreated here")
    conn.commit()
    look("recreated here, committed")
    conn.execute("ALTER TABLE t ADD COLUMN extra DEFAULT 7")
    conn.commit()
    look("returning", "INSERT INTO t (k) VALUES ('r') RETURNING *")
    conn.commit()
    look("view of it", "SELECT * FROM (SELECT * FROM t) ORDER BY k")
    other.close()
    conn.close()
    return out


@pytest.mark.parametrize("isolation_level", ["", None], ids=["implicit", "autocommit"])
def test_description_follows_schema_changes(tmp_path, isolation_level):
    stdlib = _scenario(sqlite3, str(tmp_path / "stdlib.db"), isolation_level)
    ours = _scenario(sqlite_concurrent, str(tmp_path / "ours.db"), isolation_level)
    assert len(ours) == len(stdlib)
    for expected, got in zip(stdlib, ours, strict=True):
        assert got == expected


def test_description_after_own_alter_in_memory():
    """A private database takes the same path for statements."""
    results = []
    for mod in (sqlite3, sqlite_concurrent):
        conn = mod.connect(":memory:", isolation_level=None)
        conn.execute("CREATE TABLE t (a)")
        seen = [_seen(conn.execute("SELECT * FROM t"))]
        conn.execute("ALTER TABLE t ADD COLUMN b")
        seen.append(_seen(conn.execute("SELECT * FROM t")))
        conn.execute("INSERT INTO t VALUES (1, 2)")
        conn.execute("ALTER TABLE t ADD COLUMN c")
        seen.append(_seen(conn.execute("SELECT * FROM t")))
        results.append(seen)
        conn.close()
    assert results[1] == results[0]
    assert results[0][-1][0] == ["a", "b", "c"]
