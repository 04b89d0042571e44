"""Savepoints survive a schema change (or TEMP table) that moves their transaction onto the
merger: ``RELEASE`` works and ``ROLLBACK TO`` undoes exactly what it undoes in the stdlib.

Each scenario runs through both modules on files, with ``isolation_level=None`` and the
default, and must give the same rows and errors.
"""

from __future__ import annotations

import pytest
from stdlib_steps import same_as_stdlib

import sqlite_concurrent
from sqlite_concurrent.engine import savepoints

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.parametrize("isolation_level", ["", None], ids=["deferred", "autocommit"]),
]

SETUP = ["CREATE TABLE m(x)", "INSERT INTO m VALUES (0)", "commit"]
TABLES = "SELECT name FROM sqlite_master WHERE name NOT LIKE '%commits' ORDER BY name"


def test_schema_change_inside_a_savepoint_then_release(tmp_path, isolation_level):
    same_as_stdlib(
        tmp_path,
        [
            "SAVEPOINT a",
            "CREATE TABLE t(x)",
            "in_transaction",
            "RELEASE a",
            "in_transaction",
            "SELECT * FROM t",
            "rollback",
            TABLES,
        ],
        isolation_level=isolation_level,
    )


@pytest.mark.parametrize("end", ["RELEASE a", "ROLLBACK TO a", "ROLLBACK TRANSACTION TO a"])
def test_schema_change_after_dml_inside_a_savepoint(tmp_path, isolation_level, end):
    same_as_stdlib(
        tmp_path,
        [
            *SETUP,
            "SAVEPOINT a",
            "INSERT INTO m VALUES (1)",
            "UPDATE m SET x = 10 WHERE x = 0",
            "CREATE TABLE t(x)",
            "INSERT INTO m VALUES (2)",
            "INSERT INTO t VALUES (3)",
            end,
            "in_transaction",
            "SELECT * FROM m ORDER BY x",
            "SELECT * FROM t",
            "RELEASE a",
            "in_transaction",
            "rollback",
            "SELECT * FROM m ORDER BY x",
            TABLES,
        ],
        isolation_level=isolation_level,
    )


def test_nested_savepoints(tmp_path, isolation_level):
    same_as_stdlib(
        tmp_path,
        [
            *SETUP,
            "SAVEPOINT a",
            "INSERT INTO m VALUES (1)",
            "SAVEPOINT b",
            "INSERT INTO m VALUES (2)",
            "DELETE FROM m WHERE x = 0",
            "SAVEPOINT c",
            "INSERT INTO m VALUES (3)",
            "UPDATE m SET x = x + 100 WHERE x = 1",
            "CREATE TABLE t(x)",
            "INSERT INTO m VALUES (4)",
            "ROLLBACK TO c",
            "SELECT * FROM m ORDER BY x",
            "ROLLBACK TO b",
            "SELECT * FROM m ORDER BY x",
            "RELEASE b",
            "INSERT INTO m VALUES (5)",
            "RELEASE c",
            "ROLLBACK TO a",
            "SELECT * FROM m ORDER BY x",
            "INSERT INTO m VALUES (6)",
            "RELEASE a",
            "in_transaction",
            "rollback",
            "SELECT * FROM m ORDER BY x",
            TABLES,
        ],
        isolation_level=isolation_level,
    )


def test_savepoints_of_the_same_name(tmp_path, isolation_level):
    same_as_stdlib(
        tmp_path,
        [
            *SETUP,
            'SAVEPOINT "Sp"',
            "INSERT INTO m VALUES (1)",
            "SAVEPOINT sP",
            "INSERT INTO m VALUES (2)",
            "ALTER TABLE m ADD COLUMN y",
            "INSERT INTO m VALUES (3, 3)",
            "ROLLBACK TRANSACTION TO SAVEPOINT [sp]",
            "SELECT * FROM m ORDER BY x",
            "RELEASE SAVEPOINT `SP`",
            "ROLLBACK TO sp",
            "SELECT * FROM m ORDER BY x",
            "RELEASE sp",
            "in_transaction",
            "SELECT * FROM m ORDER BY x",
        ],
        isolation_level=isolation_level,
    )


@pytest.mark.parametrize("end", ["RELEASE a", "ROLLBACK TO a"])
def test_savepoint_inside_begin(tmp_path, isolation_level, end):
    same_as_stdlib(
        tmp_path,
        [
            *SETUP,
            "BEGIN",
            "INSERT INTO m VALUES (1)",
            "SAVEPOINT a",
            "INSERT INTO m VALUES (2)",
            "ALTER TABLE m ADD COLUMN y DEFAULT 'y'",
            end,
            "in_transaction",
            "SELECT * FROM m ORDER BY x",
            "COMMIT",
            "SELECT * FROM m ORDER BY x",
            "SELECT sql FROM sqlite_master WHERE name = 'm'",
        ],
        isolation_level=isolation_level,
    )


def test_autoincrement_counters_roll_back_to_the_savepoint(tmp_path, isolation_level):
    same_as_stdlib(
        tmp_path,
        [
            "CREATE TABLE s(id INTEGER PRIMARY KEY AUTOINCREMENT, v)",
            "INSERT INTO s(v) VALUES ('before')",
            "commit",
            "SAVEPOINT a",
            "INSERT INTO s(v) VALUES ('a')",
            "SAVEPOINT b",
            "INSERT INTO s(v) VALUES ('b')",
            "CREATE TABLE t(x)",
            "ROLLBACK TO b",
            "ids: INSERT INTO s(v) VALUES ('b2')",
            "ROLLBACK TO a",
            "ids: INSERT INTO s(v) VALUES ('a2')",
            "RELEASE a",
            "SELECT * FROM s ORDER BY id",
            "SELECT * FROM sqlite_sequence",
        ],
        isolation_level=isolation_level,
    )


def test_temp_table_inside_a_savepoint(tmp_path, isolation_level):
    same_as_stdlib(
        tmp_path,
        [
            *SETUP,
            "SAVEPOINT a",
            "INSERT INTO m VALUES (1)",
            "CREATE TEMP TABLE tt(x)",
            "INSERT INTO tt VALUES (1)",
            "ROLLBACK TO a",
            "SELECT * FROM tt",
            "SELECT * FROM m",
            "CREATE TEMP TABLE tt(y)",
            "INSERT INTO tt VALUES (2)",
            "RELEASE a",
            "SELECT * FROM tt",
            "in_transaction",
        ],
        isolation_level=isolation_level,
    )


def test_foreign_keys_across_a_moved_savepoint(tmp_path, isolation_level):
    same_as_stdlib(
        tmp_path,
        [
            "PRAGMA foreign_keys = ON",
            "CREATE TABLE p(id INTEGER PRIMARY KEY)",
            "CREATE TABLE c(pid REFERENCES p(id) ON DELETE CASCADE)",
            "INSERT INTO p VALUES (1), (2)",
            "INSERT INTO c VALUES (1), (2)",
            "commit",
            "BEGIN",
            "SAVEPOINT a",
            "DELETE FROM p WHERE id = 1",
            "SAVEPOINT b",
            "INSERT INTO p VALUES (3)",
            "INSERT INTO c VALUES (3)",
            "CREATE TABLE z(x)",
            "DELETE FROM p WHERE id = 2",
            "ROLLBACK TO b",
            "SELECT * FROM c ORDER BY pid",
            "ROLLBACK TO a",
            "SELECT * FROM c ORDER BY pid",
            "INSERT INTO c VALUES (4)",
            "RELEASE a",
            "COMMIT",
            "SELECT * FROM c ORDER BY pid",
            TABLES,
        ],
        isolation_level=isolation_level,
    )


@pytest.mark.usefixtures("optimistic")  # the optimistic path's own limit
def test_ours_savepoint_over_a_deferred_foreign_key_breach_refuses_to_move(
    tmp_path, isolation_level
):
    """The one case that cannot move exactly (see :mod:`sqlite_concurrent.engine.savepoints`): a
    clear error at the statement that would move it, and nothing of the transaction is left."""
    conn = sqlite_concurrent.connect(str(tmp_path / "app.db"), isolation_level=isolation_level)
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("CREATE TABLE p(id INTEGER PRIMARY KEY)")
        conn.execute("CREATE TABLE c(pid REFERENCES p(id) DEFERRABLE INITIALLY DEFERRED)")
        conn.commit()
        conn.execute("BEGIN")
        conn.execute("SAVEPOINT a")
        conn.execute("INSERT INTO c VALUES (1)")  # a breach, legal until COMMIT
        conn.execute("SAVEPOINT b")
        conn.execute("INSERT INTO p VALUES (1)")
        with pytest.raises(sqlite_concurrent.NotSupportedError, match="deferred foreign key"):
            conn.execute("CREATE TABLE z(x)")
        assert not conn.in_transaction
        assert conn.execute("SELECT * FROM c").fetchall() == []
        assert conn.execute(TABLES).fetchall() == [("c",), ("p",)]
    finally:
        conn.close()


@pytest.mark.parametrize(
    "sql, parsed",
    [
        ("SAVEPOINT a", ("SAVEPOINT", "a")),
        ('  release  savepoint "x y" ;', ("RELEASE", "x y")),
        ("RELEASE savepoint", ("RELEASE", "savepoint")),
        ("ROLLBACK TRANSACTION TO SAVEPOINT [b]", ("ROLLBACK", "b")),
        ("rollback /* c */ to `q``q`", ("ROLLBACK", "q`q")),
        ("ROLLBACK", None),
        ("SELECT 1", None),
    ],
)
def test_savepoint_statements_are_parsed_as_sqlite_reads_them(isolation_level, sql, parsed):
    assert savepoints.parse(sql) == parsed


def test_ours_a_row_changed_and_changed_back_conflicts_like_any_written_row(
    tmp_path, isolation_level
):
    """Moving the savepoints writes each state the transaction passed through; a row it
    changed and changed back, that another transaction changed since its snapshot, is then a
    write-write conflict as at any merge: ``ConflictError``, and nothing of it is left once
    the application ends it."""
    path = str(tmp_path / "app.db")
    conn = sqlite_concurrent.connect(path, isolation_level=isolation_level)
    other = sqlite_concurrent.connect(path, isolation_level=None)
    try:
        conn.execute("CREATE TABLE m(id INTEGER PRIMARY KEY, v)")
        conn.execute("INSERT INTO m VALUES (1, 0)")
        conn.commit()
        conn.execute("BEGIN")
        assert conn.execute("SELECT v FROM m").fetchall() == [(0,)]  # the snapshot is pinned
        other.execute("UPDATE m SET v = 5 WHERE id = 1")
        conn.execute("SAVEPOINT a")
        conn.execute("UPDATE m SET v = 1 WHERE id = 1")
        conn.execute("SAVEPOINT b")
        conn.execute("UPDATE m SET v = 0 WHERE id = 1")
        with pytest.raises(sqlite_concurrent.ConflictError):
            conn.execute("CREATE TABLE t(x)")
        assert conn.in_transaction
        conn.rollback()
        assert conn.execute("SELECT v FROM m").fetchall() == [(5,)]
        assert conn.execute(TABLES).fetchall() == [("m",)]
    finally:
        conn.close()
        other.close()


@pytest.mark.parametrize("end", ["RELEASE b", "ROLLBACK TO b", "ROLLBACK TO a"])
def test_savepoints_over_rows_of_a_table_whose_key_is_not_the_rowid(tmp_path, isolation_level, end):
    """Such a table's changes are kept by rowid (``rowid_keys``); its rows at each savepoint,
    rowids, displaced rows and NULL keys included, move with the transaction as well."""
    same_as_stdlib(
        tmp_path,
        [
            "CREATE TABLE k(a TEXT, b TEXT, v UNIQUE, PRIMARY KEY (a, b))",
            "INSERT INTO k VALUES ('x', 'y', 1), ('z', NULL, 2)",
            "commit",
            "SAVEPOINT a",
            "ids: INSERT INTO k VALUES ('p', 'q', 3)",
            "ids: INSERT OR REPLACE INTO k VALUES ('r', 's', 2)",  # displaces the NULL-key row
            "SAVEPOINT b",
            "ids: INSERT INTO k VALUES ('n', NULL, 4)",
            "UPDATE k SET rowid = 50 WHERE a = 'x'",
            "DELETE FROM k WHERE a = 'p'",
            "CREATE TABLE t(x)",
            "SELECT rowid, * FROM k ORDER BY rowid",
            end,
            "SELECT rowid, * FROM k ORDER BY rowid",
            "RELEASE a",
            "commit",
            "SELECT rowid, * FROM k ORDER BY rowid",
        ],
        isolation_level=isolation_level,
    )


@pytest.mark.parametrize("mode", ["auto", "optimistic"])
def test_a_transaction_after_one_its_savepoint_committed_reads_the_latest_database(
    tmp_path, isolation_level, mode
):
    """The RELEASE of the savepoint that began a transaction commits it on its own connection
    too; the next transaction there must still read every commit since, not the pages it
    cached."""
    path = str(tmp_path / "app.db")
    conn = sqlite_concurrent.connect(path, isolation_level=isolation_level, mode=mode)
    other = sqlite_concurrent.connect(path)
    try:
        conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, note TEXT)")
        conn.execute("SAVEPOINT a")
        conn.execute("INSERT INTO t(note) VALUES ('mine')")
        conn.execute("RELEASE a")
        other.execute("INSERT INTO t(note) VALUES ('theirs')")
        other.commit()
        conn.execute("BEGIN")
        assert conn.execute("SELECT id, note FROM t ORDER BY id").fetchall() == [
            (1, "mine"),
            (2, "theirs"),
        ]
        conn.execute("INSERT INTO t(note) VALUES ('mine again')")  # a new rowid: no conflict
        conn.execute("COMMIT")
        assert [n for (n,) in other.execute("SELECT note FROM t ORDER BY id")] == [
            "mine",
            "theirs",
            "mine again",
        ]
    finally:
        other.close()
        conn.close()
