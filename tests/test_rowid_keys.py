"""Rowid tables whose declared key is not the rowid: rowids and NULL-key rows are kept as the
stdlib keeps them, through every way a merge applies a transaction."""

from __future__ import annotations

import sqlite3

import pytest

import sqlite_concurrent

ENGINES = {"stdlib": sqlite3, "ours": sqlite_concurrent}


def _both(tmp_path, work, **connect):
    out = {}
    for name, module in ENGINES.items():
        conn = module.connect(str(tmp_path / f"{name}.db"), **connect)
        try:
            out[name] = work(conn)
        finally:
            conn.close()
    assert out["ours"] == out["stdlib"]
    return out["ours"]


def test_null_in_a_composite_key_is_kept(tmp_path):
    def work(conn):
        conn.execute("CREATE TABLE t (a INTEGER, b VARCHAR(10), v TEXT, PRIMARY KEY (a, b))")
        conn.commit()
        conn.execute("INSERT INTO t VALUES (1, NULL, 'x')")
        conn.execute("INSERT INTO t VALUES (2, 'x', 'y')")
        conn.commit()
        return conn.execute("SELECT rowid, * FROM t").fetchall()

    assert _both(tmp_path, work) == [(1, 1, None, "x"), (2, 2, "x", "y")]


def test_observed_rowids_of_a_text_key_are_kept(tmp_path):
    def work(conn):
        conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v)")
        conn.commit()
        ids = [conn.execute("INSERT INTO t VALUES (?, 1)", (k,)).lastrowid for k in "abc"]
        conn.commit()
        return ids, conn.execute("SELECT k FROM t WHERE rowid = 1").fetchone()

    assert _both(tmp_path, work) == ([1, 2, 3], ("a",))


def test_executemany_of_new_text_keys_after_a_committed_row(tmp_path):
    def work(conn):
        conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v)")
        conn.commit()
        conn.execute("INSERT INTO t VALUES ('a', 1)")
        conn.commit()
        conn.executemany("INSERT INTO t VALUES (?, ?)", [("b", 2), ("c", 3)])
        conn.commit()
        return conn.execute("SELECT rowid, * FROM t").fetchall()

    assert _both(tmp_path, work) == [(1, "a", 1), (2, "b", 2), (3, "c", 3)]


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])  # FULL: journaled, group commit
def test_a_big_transaction_over_both_kinds_of_table(tmp_path, synchronous):
    """Past the size at which changesets go to ``Changeset.apply``: the keyed table's changes
    still arrive, by rowid, beside the other table's."""

    def work(conn):
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("CREATE TABLE plain (id INTEGER PRIMARY KEY, v)")
        conn.execute("CREATE TABLE keyed (k TEXT PRIMARY KEY, n, v UNIQUE)")
        conn.commit()
        conn.executemany(
            "INSERT INTO keyed VALUES (?, ?, ?)", [(f"k{i}", None, i) for i in range(50)]
        )
        conn.commit()
        conn.executemany("INSERT INTO plain(v) VALUES (?)", [("x" * 100,) for _ in range(200)])
        conn.executemany(
            "INSERT INTO keyed VALUES (?, ?, ?)", [(None, i, -i) for i in range(1, 30)]
        )
        conn.execute("DELETE FROM keyed WHERE k = 'k3'")
        conn.execute("UPDATE keyed SET n = 7 WHERE k = 'k4'")
        conn.execute("INSERT OR REPLACE INTO keyed VALUES ('new', 1, 5)")  # displaces k5
        conn.commit()
        return (
            conn.execute("SELECT count(*), sum(length(v)) FROM plain").fetchall(),
            conn.execute("SELECT rowid, * FROM keyed").fetchall(),
        )

    _both(tmp_path, work)


def test_foreign_keys_between_keyed_and_plain_tables(tmp_path):
    def work(conn):
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("CREATE TABLE parent (k TEXT PRIMARY KEY)")
        conn.execute("CREATE TABLE child (id INTEGER PRIMARY KEY, k REFERENCES parent(k))")
        conn.commit()
        conn.execute("INSERT INTO parent VALUES ('p')")
        conn.execute("INSERT INTO child(k) VALUES ('p')")
        conn.commit()
        errors = []
        try:
            conn.execute("INSERT INTO child(k) VALUES ('missing')")
        except sqlite3.IntegrityError as e:
            errors.append(str(e))
        conn.commit()
        return errors, conn.execute("SELECT * FROM child").fetchall()

    _both(tmp_path, work)


def test_a_column_named_rowid_keeps_the_table_writable(tmp_path):
    """Such a column hides the rowid from statements, so that table's changes stay keyed by
    its primary key; writing it (and every other table) still works."""

    def work(conn):
        conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, _rowid_ INT)")
        conn.execute("CREATE TABLE u (k TEXT PRIMARY KEY)")
        conn.commit()
        conn.execute("INSERT INTO t VALUES ('a', 5)")
        conn.execute("INSERT INTO u VALUES ('b')")
        conn.commit()
        return conn.execute("SELECT * FROM t").fetchall(), conn.execute(
            "SELECT * FROM u"
        ).fetchall()

    assert _both(tmp_path, work) == ([("a", 5)], [("b",)])
