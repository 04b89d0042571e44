"""More of the stdlib surface, run against both the stdlib sqlite3 module and ours: Row, the
DB-API constructors, executescript, user functions, aggregates and collations, total_changes,
text_factory.  Passing for both params means both agree."""

from __future__ import annotations

import datetime
import sqlite3

import pytest

import sqlite_concurrent

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=[sqlite3, sqlite_concurrent], ids=["sqlite3", "sqlite_concurrent"])
def mod(request):
    return request.param


@pytest.fixture
def conn(mod, tmp_path):
    c = mod.connect(str(tmp_path / "app.db"))
    c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, Name TEXT, n INT)")
    c.executemany("INSERT INTO t(Name, n) VALUES (?, ?)", [("b", 2), ("a", 1), ("c", 3)])
    c.commit()
    yield c
    c.close()


def test_row_by_index_name_and_as_sequence(mod, conn):
    conn.row_factory = mod.Row
    row = conn.execute("SELECT id, Name, n FROM t WHERE n = 2").fetchone()
    assert (row[0], row["name"], row["NAME"], row["n"], row[-1]) == (1, "b", "b", 2, 2)
    assert row.keys() == ["id", "Name", "n"]
    assert (len(row), tuple(row), row[1:]) == (3, (1, "b", 2), ("b", 2))
    with pytest.raises(IndexError):
        row["missing"]
    again = conn.execute("SELECT id, Name, n FROM t WHERE n = 2").fetchone()
    assert row == again and hash(row) == hash(again)
    assert isinstance(row, mod.Row)


def test_row_works_inside_a_transaction_and_with_cursor_factory(mod, conn):
    conn.execute("UPDATE t SET n = n + 10")
    cur = conn.cursor()
    cur.row_factory = mod.Row
    assert [r["n"] for r in cur.execute("SELECT n FROM t ORDER BY id")] == [12, 11, 13]
    conn.rollback()


def test_dbapi_constructors_and_constants(mod):
    assert mod.Binary(b"ab") == memoryview(b"ab")
    assert mod.Date(2026, 11, 21) == datetime.date(2026, 11, 21)
    assert mod.Time(1, 2, 3) == datetime.time(1, 2, 3)
    assert mod.Timestamp(2026, 11, 21, 1, 2, 3) == datetime.datetime(2026, 11, 21, 1, 2, 3)
    assert mod.DateFromTicks(0) == datetime.date.fromtimestamp(0)
    assert mod.TimestampFromTicks(0) == datetime.datetime.fromtimestamp(0)
    assert (mod.PARSE_DECLTYPES, mod.PARSE_COLNAMES) == (
        sqlite3.PARSE_DECLTYPES,
        sqlite3.PARSE_COLNAMES,
    )
    assert mod.apilevel == "2.0" and mod.paramstyle == "qmark"
    assert isinstance(mod.sqlite_version_info, tuple) and len(mod.sqlite_version_info) == 3


def test_executescript_commits_first_and_runs_every_statement(mod, conn):
    conn.execute("UPDATE t SET n = 100 WHERE id = 1")
    assert conn.in_transaction
    cur = conn.executescript(
        """
        -- a comment, then statements, one with a ';' inside a string
        INSERT INTO t(Name, n) VALUES ('semi;colon', 4);
        UPDATE t SET n = n * 10 WHERE Name = 'a';
        CREATE TABLE u(x);
        INSERT INTO u VALUES (1);
        """
    )
    assert isinstance(cur, mod.Cursor)
    assert not conn.in_transaction
    assert conn.execute("SELECT Name, n FROM t ORDER BY id").fetchall() == [
        ("b", 100),
        ("a", 10),
        ("c", 3),
        ("semi;colon", 4),
    ]
    assert conn.execute("SELECT x FROM u").fetchall() == [(1,)]


def test_executescript_with_its_own_transaction(mod, conn):
    conn.executescript("BEGIN; UPDATE t SET n = 0; ROLLBACK;")
    assert conn.execute("SELECT sum(n) FROM t").fetchone() == (6,)


def test_user_function_in_queries_and_in_writes(mod, conn):
    conn.create_function("double", 1, lambda x: x * 2, deterministic=True)
    assert conn.execute("SELECT double(n) FROM t ORDER BY id").fetchall() == [(4,), (2,), (6,)]
    conn.execute("UPDATE t SET n = double(n)")  # runs inside a write transaction
    conn.commit()
    assert conn.execute("SELECT sum(n) FROM t").fetchone() == (12,)


class _Concat:
    def __init__(self):
        self.parts = []

    def step(self, value):
        self.parts.append(value)

    def finalize(self):
        return "-".join(self.parts)


def test_user_aggregate(mod, conn):
    conn.create_aggregate("concat", 1, _Concat)
    assert conn.execute(
        "SELECT concat(Name) FROM (SELECT Name FROM t ORDER BY Name)"
    ).fetchone() == ("a-b-c",)
    conn.execute("BEGIN")
    assert conn.execute("SELECT concat(Name) FROM t WHERE n > 1").fetchone()[0] in ("b-c", "c-b")
    conn.rollback()


def test_user_collation(mod, conn):
    conn.create_collation("reverse", lambda a, b: (a < b) - (a > b))
    assert conn.execute("SELECT Name FROM t ORDER BY Name COLLATE reverse").fetchall() == [
        ("c",),
        ("b",),
        ("a",),
    ]


def test_total_changes_counts_rows_written(mod, conn):
    before = conn.total_changes
    conn.execute("UPDATE t SET n = n + 1")
    conn.execute("DELETE FROM t WHERE id = 3")
    conn.commit()
    assert conn.total_changes - before == 4


def _changes_counted(module, path: str, **kwargs) -> list[int]:
    conn = module.connect(path, **kwargs)
    seen = []
    try:
        conn.executescript(
            """CREATE TABLE t(a); CREATE TABLE log(x);
            CREATE TRIGGER logged AFTER INSERT ON t BEGIN
                INSERT INTO log VALUES (new.a); INSERT INTO log VALUES (new.a);
            END;
            CREATE TABLE p(id INTEGER PRIMARY KEY);
            CREATE TABLE ch(pid REFERENCES p(id) ON DELETE CASCADE);"""
        )
        conn.execute("PRAGMA foreign_keys = 1")
        seen.append(conn.total_changes)
        conn.execute("INSERT INTO t VALUES (1)")  # and its trigger's two rows
        conn.commit()
        seen.append(conn.total_changes)
        conn.isolation_level = None
        conn.execute("INSERT INTO p VALUES (1)")
        conn.executemany("INSERT INTO ch VALUES (?)", [(1,), (1,)])
        conn.execute("DELETE FROM p")  # and the two rows it cascades to
        seen.append(conn.total_changes)
        conn.executescript("INSERT INTO t VALUES (3); UPDATE t SET a = a;")
        seen.append(conn.total_changes)
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t VALUES (4)")
        conn.execute("ROLLBACK")  # counted all the same
        seen.append(conn.total_changes)
    finally:
        conn.close()
    return seen


@pytest.mark.parametrize("where", ["file", ":memory:"])
@pytest.mark.parametrize("mode", ["auto", "optimistic"])
def test_total_changes_counts_triggers_and_cascades_as_the_stdlib(tmp_path, where, mode):
    def path(name: str) -> str:
        return str(tmp_path / name) if where == "file" else where

    assert _changes_counted(sqlite_concurrent, path("ours.db"), mode=mode) == _changes_counted(
        sqlite3, path("stock.db")
    )


def test_text_factory_bytes(mod, conn):
    conn.text_factory = bytes
    assert conn.execute("SELECT Name, n FROM t WHERE id = 1").fetchone() == (b"b", 2)
