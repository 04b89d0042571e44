"""Connection and cursor behaviour of sqlite_concurrent compared with the stdlib sqlite3 module.

Most tests run twice, once per module, through the parametrized ``mod`` fixture: the expected
values are what the stdlib produces, so a test passing for both params means both agree.  Tests
about deliberate differences are separate and say so in their docstring.
"""

from __future__ import annotations

import sqlite3

import pytest
from conftest import stock_apsw

import sqlite_concurrent

pytestmark = pytest.mark.timeout(60)

ERROR_CLASSES = (
    "Warning",
    "Error",
    "InterfaceError",
    "DatabaseError",
    "DataError",
    "OperationalError",
    "IntegrityError",
    "InternalError",
    "ProgrammingError",
    "NotSupportedError",
)


@pytest.fixture(params=[sqlite3, sqlite_concurrent], ids=["sqlite3", "sqlite_concurrent"])
def mod(request):
    """The DB-API module under test: the stdlib, or ours."""
    return request.param


@pytest.fixture
def db_path(tmp_path):
    return str(tmp_path / "app.db")


@pytest.fixture
def connect(mod, db_path):
    """Open connections of the module under test on one file; all are closed at teardown."""
    opened = []

    def _connect(path=None, **kwargs):
        conn = mod.connect(path or db_path, **kwargs)
        opened.append(conn)
        return conn

    yield _connect
    for conn in reversed(opened):
        conn.close()


@pytest.fixture
def conn(connect):
    """A connection with table ``t(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, n INT)``."""
    c = connect()
    c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, n INT)")
    return c


@pytest.fixture
def filled(conn):
    """``conn`` with three committed rows."""
    conn.executemany(
        "INSERT INTO t(id, name, n) VALUES (?, ?, ?)",
        [(1, "a", 10), (2, "b", 20), (3, "c", 30)],
    )
    conn.commit()
    return conn


@pytest.fixture
def committed_rows(mod):
    """Rows of ``t`` as a fresh connection of the same module sees them.

    Never a stdlib connection on a file this process has opened with ours: two copies of SQLite
    in one process (the stdlib's and APSW's) drop each other's POSIX locks, so it is refused
    (see the README's limits).
    """

    def rows(path):
        c = mod.connect(path)
        try:
            return c.execute("SELECT id, name, n FROM t ORDER BY id").fetchall()
        finally:
            c.close()

    return rows


def assert_error_class(exc_info, name):
    """The exception is the module's class ``name`` and the stdlib class of that name."""
    exc = exc_info.value
    assert type(exc).__name__ == name
    assert isinstance(exc, getattr(sqlite3, name))


# -- cursor results --------------------------------------------------------------------------------


def test_description_names_columns_with_dbapi_seven_tuples(filled):
    cur = filled.execute("SELECT id, name AS label, n * 2 FROM t ORDER BY id")
    assert cur.description == (
        ("id", None, None, None, None, None, None),
        ("label", None, None, None, None, None, None),
        ("n * 2", None, None, None, None, None, None),
    )
    assert cur.fetchall() == [(1, "a", 20), (2, "b", 40), (3, "c", 60)]


def test_description_is_set_for_select_returning_zero_rows(filled):
    cur = filled.execute("SELECT id, name FROM t WHERE id > 100")
    assert cur.description == (
        ("id", None, None, None, None, None, None),
        ("name", None, None, None, None, None, None),
    )
    assert cur.fetchall() == []


def test_description_is_set_for_select_on_empty_table(conn):
    cur = conn.execute("SELECT * FROM t")
    assert [d[0] for d in cur.description] == ["id", "name", "n"]
    assert cur.fetchone() is None


def test_description_is_none_for_dml_and_before_execute(conn):
    cur = conn.cursor()
    assert cur.description is None
    cur.execute("INSERT INTO t(name) VALUES ('x')")
    assert cur.description is None


def test_description_is_reset_when_cursor_runs_dml_after_select(filled):
    cur = filled.cursor()
    cur.execute("SELECT id FROM t")
    assert cur.description is not None
    cur.execute("UPDATE t SET n = n + 1 WHERE id = 1")
    assert cur.description is None


def test_description_follows_a_schema_change_between_transactions(mod, filled, connect):
    # The same SQL text, run in a transaction before and after another connection adds a
    # column: the description is the schema's of the moment, never a remembered one.
    other = connect()
    query = "SELECT * FROM t WHERE id = ?"
    for _ in range(2):
        filled.execute("UPDATE t SET n = n + 1 WHERE id = 1")  # inside a transaction
        assert [d[0] for d in filled.execute(query, (1,)).description] == ["id", "name", "n"]
        filled.commit()
    other.execute("ALTER TABLE t ADD COLUMN extra DEFAULT 'x'")
    other.commit()
    filled.execute("UPDATE t SET n = n + 1 WHERE id = 1")
    cur = filled.execute(query, (99,))  # no rows: the columns still come from the new schema
    assert [d[0] for d in cur.description] == ["id", "name", "n", "extra"]
    cur = filled.execute(query, (1,))
    assert [d[0] for d in cur.description] == ["id", "name", "n", "extra"]
    assert cur.fetchall() == [(1, "a", 13, "x")]
    returning = "UPDATE t SET n = n + 1 WHERE id = 2 RETURNING id, n AS now"
    for now in (21, 22):
        cur = filled.execute(returning)
        assert [d[0] for d in cur.description] == ["id", "now"] and cur.fetchall() == [(2, now)]
    filled.commit()


def test_several_statements_are_refused_every_time_inside_a_transaction(filled):
    filled.execute("UPDATE t SET n = 0 WHERE id = 3")
    for _ in range(3):
        with pytest.raises(sqlite3.ProgrammingError):
            filled.execute("SELECT n FROM t WHERE id = 1; UPDATE t SET n = 0 WHERE id = 2")
        assert filled.execute("SELECT n FROM t WHERE id = 1").fetchone() == (10,)
    assert filled.execute("SELECT n FROM t WHERE id = 2").fetchone() == (20,)
    filled.rollback()


def test_rowcount_for_insert_update_delete(filled):
    cur = filled.cursor()
    cur.execute("INSERT INTO t(name, n) VALUES ('d', 40)")
    assert cur.rowcount == 1
    cur.execute("UPDATE t SET n = n + 1 WHERE n >= 20")
    assert cur.rowcount == 3
    cur.execute("UPDATE t SET n = 0 WHERE id = 999")
    assert cur.rowcount == 0
    cur.execute("DELETE FROM t WHERE id IN (1, 2)")
    assert cur.rowcount == 2
    cur.execute("INSERT INTO t(name, n) SELECT name || '2', n FROM t")
    assert cur.rowcount == 2


def test_rowcount_is_minus_one_for_select(filled):
    cur = filled.execute("SELECT * FROM t")
    assert cur.rowcount == -1
    cur.fetchall()
    assert cur.rowcount == -1


def test_executemany_rowcount_is_the_sum_over_all_parameter_sets(filled):
    cur = filled.executemany("UPDATE t SET n = ? WHERE id <= ?", [(0, 1), (0, 2), (5, 99)])
    assert cur.rowcount == 1 + 2 + 3
    cur = filled.executemany("INSERT INTO t(name) VALUES (?)", [("x",), ("y",)])
    assert cur.rowcount == 2
    filled.commit()
    assert filled.execute("SELECT count(*), sum(n) FROM t").fetchone() == (5, 15)


def test_executemany_accepts_a_generator(conn):
    cur = conn.executemany("INSERT INTO t(name, n) VALUES (?, ?)", ((f"r{i}", i) for i in range(5)))
    assert cur.rowcount == 5
    conn.commit()
    assert conn.execute("SELECT sum(n) FROM t").fetchone() == (10,)


def test_lastrowid_is_the_rowid_of_the_last_insert(conn):
    cur = conn.cursor()
    assert cur.lastrowid is None
    cur.execute("INSERT INTO t(name) VALUES ('a')")
    assert cur.lastrowid == 1
    cur.execute("INSERT INTO t(id, name) VALUES (10, 'b')")
    assert cur.lastrowid == 10
    cur.execute("INSERT INTO t(name) VALUES ('c')")
    assert cur.lastrowid == 11
    other = conn.execute("INSERT INTO t(name) VALUES ('d')")
    assert other.lastrowid == 12
    assert cur.lastrowid == 11
    conn.commit()
    assert [r[0] for r in conn.execute("SELECT name FROM t ORDER BY id")] == ["a", "b", "c", "d"]


def test_lastrowid_is_kept_by_update_on_the_same_cursor(conn):
    cur = conn.cursor()
    cur.execute("INSERT INTO t(id, name) VALUES (7, 'a')")
    cur.execute("UPDATE t SET n = 1")
    assert cur.lastrowid == 7


def test_lastrowid_of_rowid_table_without_primary_key(connect):
    c = connect()
    c.execute("CREATE TABLE plain(x)")
    cur = c.execute("INSERT INTO plain VALUES ('one')")
    assert cur.lastrowid == 1
    cur = c.execute("INSERT INTO plain VALUES ('two')")
    assert cur.lastrowid == 2
    c.commit()
    assert c.execute("SELECT rowid, x FROM plain ORDER BY rowid").fetchall() == [
        (1, "one"),
        (2, "two"),
    ]


def test_fetchone_returns_rows_then_none(filled):
    cur = filled.execute("SELECT id, name FROM t ORDER BY id")
    assert cur.fetchone() == (1, "a")
    assert cur.fetchone() == (2, "b")
    assert cur.fetchone() == (3, "c")
    assert cur.fetchone() is None
    assert cur.fetchone() is None


def test_fetchmany_uses_arraysize_and_explicit_size(filled):
    cur = filled.execute("SELECT id FROM t ORDER BY id")
    assert cur.arraysize == 1
    assert cur.fetchmany() == [(1,)]
    assert cur.fetchmany(5) == [(2,), (3,)]
    assert cur.fetchmany(5) == []
    cur = filled.execute("SELECT id FROM t ORDER BY id")
    cur.arraysize = 2
    assert cur.fetchmany() == [(1,), (2,)]
    assert cur.fetchmany() == [(3,)]
    assert cur.fetchmany(size=0) == []


def test_fetchall_returns_the_remaining_rows(filled):
    cur = filled.execute("SELECT id FROM t ORDER BY id")
    assert cur.fetchone() == (1,)
    assert cur.fetchall() == [(2,), (3,)]
    assert cur.fetchall() == []


def test_cursor_iteration(filled):
    rows = [row for row in filled.execute("SELECT id, n FROM t ORDER BY id")]
    assert rows == [(1, 10), (2, 20), (3, 30)]
    cur = filled.execute("SELECT id FROM t ORDER BY id")
    assert next(cur) == (1,)
    assert list(cur) == [(2,), (3,)]
    with pytest.raises(StopIteration):
        next(cur)


def test_select_cursor_opened_in_a_transaction_keeps_its_rows_after_commit(filled):
    filled.execute("UPDATE t SET n = 0 WHERE id = 1")
    cur = filled.execute("SELECT id, n FROM t ORDER BY id")
    assert cur.fetchone() == (1, 0)
    filled.commit()
    assert cur.fetchall() == [(2, 20), (3, 30)]


def test_select_cursor_opened_in_a_transaction_keeps_its_rows_after_rollback(filled):
    filled.execute("UPDATE t SET n = 0")
    cur = filled.execute("SELECT id, n FROM t ORDER BY id")
    assert cur.fetchone() == (1, 0)
    filled.rollback()
    # Values read after the rollback are unspecified (the stdlib mixes old and new); the
    # cursor must still deliver the remaining rows rather than fail.
    assert [row[0] for row in cur.fetchall()] == [2, 3]
    assert filled.execute("SELECT n FROM t WHERE id = 2").fetchone() == (20,)


def test_reading_cursor_survives_a_write_and_commit_on_the_same_connection(filled):
    cur = filled.execute("SELECT id FROM t ORDER BY id")
    assert cur.fetchone() == (1,)
    filled.execute("UPDATE t SET n = 7 WHERE id = 3")
    filled.commit()
    assert cur.fetchall() == [(2,), (3,)]
    assert filled.execute("SELECT n FROM t WHERE id = 3").fetchone() == (7,)


def test_execute_returns_the_cursor_itself(conn):
    cur = conn.cursor()
    assert cur.execute("SELECT 1") is cur
    assert cur.fetchall() == [(1,)]


def test_parameters_qmark_and_named(filled):
    assert filled.execute("SELECT name FROM t WHERE id = ?", (2,)).fetchall() == [("b",)]
    assert filled.execute("SELECT name FROM t WHERE id = :id", {"id": 3}).fetchall() == [("c",)]


def test_wrong_number_of_parameters_is_programming_error(conn):
    with pytest.raises(sqlite3.ProgrammingError) as exc_info:
        conn.execute("SELECT ?, ?", (1,))
    assert_error_class(exc_info, "ProgrammingError")
    assert conn.execute("SELECT ?, ?", (1, 2)).fetchall() == [(1, 2)]


def test_several_statements_in_one_execute_is_programming_error(
    mod, filled, db_path, committed_rows, request
):
    with pytest.raises(sqlite3.ProgrammingError) as exc_info:
        filled.execute("UPDATE t SET n = 0 WHERE id = 1; UPDATE t SET n = 0 WHERE id = 2")
    assert_error_class(exc_info, "ProgrammingError")
    filled.commit()
    assert committed_rows(db_path) == [(1, "a", 10), (2, "b", 20), (3, "c", 30)]


def test_sql_that_is_not_a_string_is_type_error(mod, conn, request):
    with pytest.raises(TypeError):
        conn.execute(42)


def test_execute_on_closed_cursor_is_programming_error(conn):
    cur = conn.cursor()
    cur.close()
    with pytest.raises(sqlite3.ProgrammingError) as exc_info:
        cur.execute("SELECT 1")
    assert_error_class(exc_info, "ProgrammingError")


# -- row_factory -----------------------------------------------------------------------------------


def dict_factory(cursor, row):
    return {d[0]: v for d, v in zip(cursor.description, row, strict=True)}


def test_connection_row_factory_applies_to_new_cursors(filled):
    filled.row_factory = dict_factory
    cur = filled.execute("SELECT id, name FROM t ORDER BY id")
    assert cur.fetchone() == {"id": 1, "name": "a"}
    assert cur.fetchmany(1) == [{"id": 2, "name": "b"}]
    assert list(cur) == [{"id": 3, "name": "c"}]


def test_cursor_row_factory_overrides_connection(filled):
    filled.row_factory = dict_factory
    cur = filled.cursor()
    cur.row_factory = lambda cursor, row: row[0] * 100
    assert cur.execute("SELECT id FROM t ORDER BY id").fetchall() == [100, 200, 300]


def test_row_factory_is_copied_when_the_cursor_is_created(filled):
    before = filled.cursor()
    filled.row_factory = dict_factory
    assert before.execute("SELECT id FROM t WHERE id = 1").fetchall() == [(1,)]
    filled.row_factory = None
    assert filled.execute("SELECT id FROM t WHERE id = 1").fetchall() == [(1,)]


def test_row_factory_inside_a_transaction_sees_own_writes(filled):
    filled.row_factory = dict_factory
    filled.execute("UPDATE t SET n = 99 WHERE id = 2")
    assert filled.in_transaction
    assert filled.execute("SELECT id, n FROM t WHERE id = 2").fetchall() == [{"id": 2, "n": 99}]
    filled.rollback()


# -- transactions ----------------------------------------------------------------------------------


def test_dml_opens_an_implicit_transaction_by_default(filled, db_path, committed_rows):
    assert filled.isolation_level == ""
    assert not filled.in_transaction
    filled.execute("SELECT * FROM t").fetchall()
    assert not filled.in_transaction
    filled.execute("UPDATE t SET n = 0 WHERE id = 1")
    assert filled.in_transaction
    assert committed_rows(db_path)[0] == (1, "a", 10)
    filled.commit()
    assert not filled.in_transaction
    assert committed_rows(db_path)[0] == (1, "a", 0)


@pytest.mark.parametrize("statement", ["INSERT", "UPDATE", "DELETE", "REPLACE"])
def test_each_dml_keyword_opens_a_transaction(filled, db_path, statement, committed_rows):
    sql = {
        "INSERT": "INSERT INTO t(name) VALUES ('new')",
        "UPDATE": "UPDATE t SET n = -1",
        "DELETE": "DELETE FROM t WHERE id = 1",
        "REPLACE": "REPLACE INTO t(id, name) VALUES (1, 'z')",
    }[statement]
    filled.execute(sql)
    assert filled.in_transaction
    filled.rollback()
    assert not filled.in_transaction
    assert committed_rows(db_path) == [(1, "a", 10), (2, "b", 20), (3, "c", 30)]


def test_dml_after_leading_comment_opens_a_transaction(filled):
    filled.execute("-- a comment\n/* another */ UPDATE t SET n = 1")
    assert filled.in_transaction
    filled.rollback()


def test_rollback_discards_the_implicit_transaction(filled, db_path, committed_rows):
    filled.execute("DELETE FROM t")
    assert filled.execute("SELECT count(*) FROM t").fetchone() == (0,)
    filled.rollback()
    assert not filled.in_transaction
    assert filled.execute("SELECT count(*) FROM t").fetchone() == (3,)
    assert len(committed_rows(db_path)) == 3


def test_commit_and_rollback_without_a_transaction_are_no_ops(filled):
    filled.commit()
    filled.rollback()
    assert not filled.in_transaction
    assert filled.execute("SELECT count(*) FROM t").fetchone() == (3,)


def test_explicit_begin_commit_sql(filled, db_path, committed_rows):
    filled.execute("BEGIN")
    assert filled.in_transaction
    filled.execute("UPDATE t SET n = 1 WHERE id = 1")
    assert committed_rows(db_path)[0] == (1, "a", 10)
    filled.execute("COMMIT")
    assert not filled.in_transaction
    assert committed_rows(db_path)[0] == (1, "a", 1)


def test_explicit_begin_rollback_sql(filled, db_path, committed_rows):
    filled.execute("BEGIN")
    filled.execute("INSERT INTO t(name) VALUES ('gone')")
    filled.execute("ROLLBACK")
    assert not filled.in_transaction
    assert filled.execute("SELECT count(*) FROM t").fetchone() == (3,)
    assert len(committed_rows(db_path)) == 3


def test_end_transaction_sql_commits(filled, db_path, committed_rows):
    filled.execute("BEGIN")
    filled.execute("DELETE FROM t WHERE id = 3")
    filled.execute("END TRANSACTION")
    assert not filled.in_transaction
    assert [r[0] for r in committed_rows(db_path)] == [1, 2]


def test_explicit_begin_with_a_select_only_is_a_transaction(filled):
    filled.execute("BEGIN")
    assert filled.in_transaction
    assert filled.execute("SELECT count(*) FROM t").fetchone() == (3,)
    filled.execute("COMMIT")
    assert not filled.in_transaction


def test_commit_method_after_explicit_begin(filled, db_path, committed_rows):
    filled.execute("BEGIN")
    filled.execute("UPDATE t SET name = 'A' WHERE id = 1")
    filled.commit()
    assert not filled.in_transaction
    assert committed_rows(db_path)[0] == (1, "A", 10)


def test_commit_sql_without_transaction_is_operational_error(filled):
    with pytest.raises(sqlite3.OperationalError) as exc_info:
        filled.execute("COMMIT")
    assert_error_class(exc_info, "OperationalError")
    assert not filled.in_transaction


def test_rollback_sql_without_transaction_is_operational_error(filled):
    with pytest.raises(sqlite3.OperationalError) as exc_info:
        filled.execute("ROLLBACK")
    assert_error_class(exc_info, "OperationalError")


def test_begin_inside_a_transaction_is_operational_error(filled, db_path, committed_rows):
    filled.execute("BEGIN")
    filled.execute("UPDATE t SET n = 5 WHERE id = 1")
    with pytest.raises(sqlite3.OperationalError) as exc_info:
        filled.execute("BEGIN")
    assert_error_class(exc_info, "OperationalError")
    assert filled.in_transaction
    filled.commit()
    assert committed_rows(db_path)[0] == (1, "a", 5)


def test_isolation_level_none_autocommits_each_statement(connect, db_path, committed_rows):
    c = connect(isolation_level=None)
    assert c.isolation_level is None
    c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, n INT)")
    cur = c.execute("INSERT INTO t(name, n) VALUES ('a', 1)")
    assert cur.rowcount == 1
    assert cur.lastrowid == 1
    assert not c.in_transaction
    assert committed_rows(db_path) == [(1, "a", 1)]
    cur = c.executemany("INSERT INTO t(name, n) VALUES (?, ?)", [("b", 2), ("c", 3)])
    assert cur.rowcount == 2
    assert not c.in_transaction
    c.execute("UPDATE t SET n = n * 10")
    c.execute("DELETE FROM t WHERE name = 'b'")
    assert not c.in_transaction
    assert committed_rows(db_path) == [(1, "a", 10), (3, "c", 30)]


def test_isolation_level_none_failed_statement_leaves_no_transaction(
    connect, db_path, committed_rows
):
    c = connect(isolation_level=None)
    c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, n INT)")
    c.execute("INSERT INTO t(name) VALUES ('a')")
    with pytest.raises(sqlite3.IntegrityError):
        c.execute("INSERT INTO t(name) VALUES ('a')")
    assert not c.in_transaction
    c.execute("INSERT INTO t(name) VALUES ('b')")
    assert committed_rows(db_path) == [(1, "a", None), (2, "b", None)]


def test_isolation_level_none_with_explicit_begin(connect, db_path, committed_rows):
    c = connect(isolation_level=None)
    c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, n INT)")
    c.execute("BEGIN")
    assert c.in_transaction
    c.execute("INSERT INTO t(name) VALUES ('a')")
    c.execute("INSERT INTO t(name) VALUES ('b')")
    assert committed_rows(db_path) == []
    c.execute("COMMIT")
    assert not c.in_transaction
    assert [r[1] for r in committed_rows(db_path)] == ["a", "b"]
    c.execute("BEGIN")
    c.execute("DELETE FROM t")
    c.rollback()
    assert len(committed_rows(db_path)) == 2


@pytest.mark.parametrize("level", ["DEFERRED", "IMMEDIATE", "EXCLUSIVE"])
def test_named_isolation_levels_open_implicit_transactions(connect, db_path, level, committed_rows):
    c = connect(isolation_level=level)
    c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, n INT)")
    assert c.isolation_level == level
    c.execute("INSERT INTO t(name) VALUES ('a')")
    assert c.in_transaction
    c.commit()
    assert committed_rows(db_path) == [(1, "a", None)]


def test_uncommitted_writes_are_invisible_to_another_connection(filled, connect):
    other = connect()
    filled.execute("UPDATE t SET n = 0")
    filled.execute("INSERT INTO t(name) VALUES ('d')")
    assert filled.execute("SELECT count(*), sum(n) FROM t").fetchone() == (4, 0)
    assert other.execute("SELECT count(*), sum(n) FROM t").fetchone() == (3, 60)
    filled.commit()
    assert other.execute("SELECT count(*), sum(n) FROM t").fetchone() == (4, 0)


def test_context_manager_commits_on_success(filled, db_path, committed_rows):
    with filled as entered:
        assert entered is filled
        filled.execute("UPDATE t SET n = 1 WHERE id = 1")
    assert not filled.in_transaction
    assert committed_rows(db_path)[0] == (1, "a", 1)
    assert filled.execute("SELECT 1").fetchone() == (1,)


def test_context_manager_rolls_back_on_exception(filled, db_path, committed_rows):
    with pytest.raises(ZeroDivisionError), filled:
        filled.execute("UPDATE t SET n = 1 WHERE id = 1")
        1 / 0  # noqa: B018
    assert not filled.in_transaction
    assert committed_rows(db_path)[0] == (1, "a", 10)
    assert filled.execute("SELECT n FROM t WHERE id = 1").fetchone() == (10,)


def test_context_manager_rolls_back_after_sql_error(filled, db_path, committed_rows):
    with pytest.raises(sqlite3.IntegrityError), filled:
        filled.execute("UPDATE t SET n = 1 WHERE id = 1")
        filled.execute("INSERT INTO t(name) VALUES ('a')")
    assert not filled.in_transaction
    assert committed_rows(db_path)[0] == (1, "a", 10)


def test_context_manager_can_be_reused(filled, db_path, committed_rows):
    for i in range(3):
        with filled:
            filled.execute("UPDATE t SET n = ? WHERE id = 1", (i,))
    assert committed_rows(db_path)[0] == (1, "a", 2)


def test_savepoint_rollback_to_inside_an_explicit_transaction(conn, db_path, committed_rows):
    conn.execute("BEGIN")
    conn.execute("INSERT INTO t(id, name) VALUES (1, 'kept')")
    conn.execute("SAVEPOINT sp")
    conn.execute("INSERT INTO t(id, name) VALUES (2, 'undone')")
    conn.execute("ROLLBACK TO sp")
    assert conn.in_transaction
    conn.execute("INSERT INTO t(id, name) VALUES (3, 'also kept')")
    conn.execute("RELEASE sp")
    assert conn.in_transaction
    conn.commit()
    assert committed_rows(db_path) == [(1, "kept", None), (3, "also kept", None)]


def test_savepoint_outside_a_transaction_starts_one(mod, conn, db_path, committed_rows, request):
    conn.execute("SAVEPOINT outer")
    assert conn.in_transaction
    conn.execute("INSERT INTO t(name) VALUES ('a')")
    conn.execute("RELEASE outer")
    assert not conn.in_transaction
    assert committed_rows(db_path) == [(1, "a", None)]


# -- closed connections ----------------------------------------------------------------------------


def test_closed_connection_raises_programming_error(filled):
    cur = filled.cursor()
    filled.close()
    for action in (
        lambda: filled.execute("SELECT 1"),
        lambda: filled.executemany("INSERT INTO t(name) VALUES (?)", [("x",)]),
        filled.cursor,
        filled.commit,
        filled.rollback,
        lambda: filled.in_transaction,
        lambda: cur.execute("SELECT 1"),
    ):
        with pytest.raises(sqlite3.ProgrammingError) as exc_info:
            action()
        assert_error_class(exc_info, "ProgrammingError")


def test_close_twice_is_allowed(conn):
    conn.close()
    conn.close()


def test_close_rolls_back_an_open_transaction(filled, db_path, committed_rows):
    filled.execute("DELETE FROM t")
    filled.close()
    assert len(committed_rows(db_path)) == 3


def test_fetch_from_cursor_of_closed_connection_is_programming_error(filled):
    cur = filled.execute("SELECT id FROM t")
    filled.close()
    with pytest.raises(sqlite3.ProgrammingError) as exc_info:
        cur.fetchall()
    assert_error_class(exc_info, "ProgrammingError")


# -- SQL errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "error"),
    [
        ("SELEC 1", "OperationalError"),
        ("SELECT * FROM no_such_table", "OperationalError"),
        ("SELECT no_such_column FROM t", "OperationalError"),
        ("INSERT INTO no_such_table VALUES (1)", "OperationalError"),
        ("INSERT INTO t(name) VALUES (NULL)", "IntegrityError"),
        ("INSERT INTO t(name) VALUES ('a')", "IntegrityError"),
        ("INSERT INTO t(id, name) VALUES (1, 'zz')", "IntegrityError"),
        ("UPDATE t SET name = 'b' WHERE id = 1", "IntegrityError"),
        ("UPDATE t SET name = NULL", "IntegrityError"),
    ],
)
def test_sql_errors_raise_the_stdlib_class_and_connection_stays_usable(
    filled, db_path, sql, error, committed_rows
):
    with pytest.raises(sqlite3.Error) as exc_info:
        filled.execute(sql)
    assert_error_class(exc_info, error)
    filled.rollback()
    assert not filled.in_transaction
    filled.execute("INSERT INTO t(name) VALUES ('after')")
    filled.commit()
    assert [r[1] for r in committed_rows(db_path)] == ["a", "b", "c", "after"]


def test_failed_dml_outside_transaction_leaves_implicit_transaction_open(
    filled, db_path, committed_rows
):
    with pytest.raises(sqlite3.IntegrityError):
        filled.execute("INSERT INTO t(name) VALUES ('a')")
    assert filled.in_transaction
    filled.execute("INSERT INTO t(name) VALUES ('d')")
    filled.commit()
    assert [r[1] for r in committed_rows(db_path)] == ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    ("sql", "error"),
    [
        ("INSERT INTO t(name) VALUES ('a')", "IntegrityError"),
        ("INSERT INTO t(name) VALUES (NULL)", "IntegrityError"),
        ("UPDATE t SET name = 'c' WHERE id = 1", "IntegrityError"),
        ("SELECT * FROM missing", "OperationalError"),
        ("UPDAT t SET n = 1", "OperationalError"),
    ],
)
def test_error_inside_transaction_undoes_only_the_failed_statement(
    filled, db_path, sql, error, committed_rows
):
    filled.execute("UPDATE t SET n = 11 WHERE id = 1")
    filled.execute("INSERT INTO t(name, n) VALUES ('d', 40)")
    with pytest.raises(sqlite3.Error) as exc_info:
        filled.execute(sql)
    assert_error_class(exc_info, error)
    assert filled.in_transaction
    assert filled.execute("SELECT id, name, n FROM t ORDER BY id").fetchall() == [
        (1, "a", 11),
        (2, "b", 20),
        (3, "c", 30),
        (4, "d", 40),
    ]
    filled.execute("UPDATE t SET n = 22 WHERE id = 2")
    filled.commit()
    assert committed_rows(db_path) == [(1, "a", 11), (2, "b", 22), (3, "c", 30), (4, "d", 40)]


def test_failed_multi_row_statement_is_undone_as_a_whole(filled, db_path, committed_rows):
    filled.execute("INSERT INTO t(name) VALUES ('d')")
    with pytest.raises(sqlite3.IntegrityError):
        # Row 1 gets name 'x', then row 2 collides with it.
        filled.execute("UPDATE t SET name = 'x' WHERE id IN (1, 2)")
    assert filled.in_transaction
    filled.commit()
    assert [r[1] for r in committed_rows(db_path)] == ["a", "b", "c", "d"]


def test_executemany_error_keeps_earlier_parameter_sets(filled, db_path, committed_rows):
    with pytest.raises(sqlite3.IntegrityError) as exc_info:
        filled.executemany("INSERT INTO t(name) VALUES (?)", [("d",), ("e",), ("a",), ("f",)])
    assert_error_class(exc_info, "IntegrityError")
    assert filled.in_transaction
    filled.commit()
    assert [r[1] for r in committed_rows(db_path)] == ["a", "b", "c", "d", "e"]


def test_executemany_with_select_is_programming_error(filled):
    with pytest.raises(sqlite3.ProgrammingError) as exc_info:
        filled.executemany("SELECT * FROM t WHERE id = ?", [(1,), (2,)])
    assert_error_class(exc_info, "ProgrammingError")
    assert filled.execute("SELECT count(*) FROM t").fetchone() == (3,)


def test_module_exports_dbapi_globals_and_error_classes(mod):
    assert mod.apilevel == "2.0"
    assert mod.paramstyle == "qmark"
    for name in ERROR_CLASSES:
        assert issubclass(getattr(mod, name), getattr(sqlite3, name))


# -- deliberate differences (sqlite_concurrent only) -----------------------------------------------


@pytest.fixture
def ours(tmp_path):
    """A sqlite_concurrent connection with a filled table ``t``; closed at teardown."""
    c = sqlite_concurrent.connect(str(tmp_path / "ours.db"))
    c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, n INT)")
    c.executemany("INSERT INTO t(name, n) VALUES (?, ?)", [("a", 1), ("b", 2)])
    c.commit()
    yield c
    c.close()


@pytest.mark.parametrize(
    "ddl,probe",
    [
        ("CREATE TABLE u(x)", "SELECT name FROM sqlite_schema ORDER BY name"),
        ("CREATE INDEX t_n ON t(n)", "SELECT name FROM sqlite_schema ORDER BY name"),
        ("DROP TABLE t", "SELECT name FROM sqlite_schema ORDER BY name"),
        ("ALTER TABLE t ADD COLUMN extra", "SELECT sql FROM sqlite_schema"),
        ("CREATE VIEW v AS SELECT 1", "SELECT name FROM sqlite_schema ORDER BY name"),
        ("PRAGMA user_version = 5", "PRAGMA user_version"),
        ("ANALYZE", "SELECT name FROM sqlite_schema ORDER BY name"),
    ],
)
@pytest.mark.parametrize("end", ["commit", "rollback"])
def test_schema_change_inside_a_transaction_is_part_of_it(connect, filled, ddl, probe, end):
    """DDL after DML joins the open transaction (no implicit commit since Python 3.6): it
    commits or rolls back together with the rows."""
    filled.execute("UPDATE t SET n = 11 WHERE id = 1")
    filled.execute(ddl)
    assert filled.in_transaction
    other = connect()
    before = other.execute(probe).fetchall()
    getattr(filled, end)()
    assert not filled.in_transaction
    after = other.execute(probe).fetchall()
    if end == "commit":
        assert after != before
        if ddl != "DROP TABLE t":
            assert other.execute("SELECT n FROM t WHERE id = 1").fetchone() == (11,)
    else:
        assert after == before
        assert other.execute("SELECT n FROM t WHERE id = 1").fetchone() == (10,)


def test_ours_schema_change_outside_transaction_is_applied(ours, tmp_path):
    """DDL outside a transaction runs on a stock connection under the merge lock."""
    ours.execute("CREATE TABLE u(x)")
    ours.execute("CREATE INDEX t_n ON t(n)")
    ours.execute("ALTER TABLE t ADD COLUMN extra DEFAULT 'e'")
    assert not ours.in_transaction
    ours.execute("INSERT INTO u VALUES (1)")
    ours.commit()
    ours.close()
    check = stock_apsw(str(tmp_path / "ours.db"))
    try:
        names = {r[0] for r in check.execute("SELECT name FROM sqlite_schema")}
        assert {"t", "u", "t_n"} <= names
        assert check.execute("SELECT * FROM u").fetchall() == [(1,)]
        assert check.execute("SELECT name, extra FROM t ORDER BY id").fetchall() == [
            ("a", "e"),
            ("b", "e"),
        ]
    finally:
        check.close()


def test_ours_conflict_error_exists_only_in_sqlite_concurrent():
    """Only ours has ConflictError; it is an OperationalError so stdlib handlers catch it."""
    assert not hasattr(sqlite3, "ConflictError")
    assert issubclass(sqlite_concurrent.ConflictError, sqlite3.OperationalError)
    assert issubclass(sqlite_concurrent.ConflictError, sqlite_concurrent.OperationalError)


def test_ours_switching_journal_mode_is_not_supported(ours, tmp_path):
    """Differs from the stdlib on purpose: the database must stay in WAL mode."""
    with pytest.raises(sqlite_concurrent.NotSupportedError):
        ours.execute("PRAGMA journal_mode = DELETE")
    ours.close()
    check = stock_apsw(str(tmp_path / "ours.db"))
    try:
        assert check.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        check.close()
