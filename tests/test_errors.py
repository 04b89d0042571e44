"""The exception hierarchy, ConflictError, real write-write conflicts, and transact()."""

from __future__ import annotations

import pickle
import sqlite3

import pytest

import sqlite_concurrent
from sqlite_concurrent import errors

pytestmark = pytest.mark.timeout(60)

STDLIB_NAMES = (
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


# -- hierarchy -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", STDLIB_NAMES)
def test_each_class_subclasses_its_stdlib_namesake(name):
    ours = getattr(errors, name)
    assert ours is not getattr(sqlite3, name)
    assert issubclass(ours, getattr(sqlite3, name))
    assert getattr(sqlite_concurrent, name) is ours


@pytest.mark.parametrize(
    "name",
    [n for n in STDLIB_NAMES if n not in ("Warning", "Error")],
)
def test_each_error_class_is_one_of_our_errors_and_a_stdlib_error(name):
    ours = getattr(errors, name)
    assert issubclass(ours, errors.Error)
    assert issubclass(ours, sqlite3.Error)


def test_class_tree_mirrors_the_stdlib():
    assert issubclass(errors.DatabaseError, errors.Error)
    assert issubclass(errors.InterfaceError, errors.Error)
    for name in (
        "DataError",
        "OperationalError",
        "IntegrityError",
        "InternalError",
        "ProgrammingError",
        "NotSupportedError",
    ):
        assert issubclass(getattr(errors, name), errors.DatabaseError)
    assert not issubclass(errors.IntegrityError, sqlite3.OperationalError)
    assert not issubclass(errors.OperationalError, sqlite3.IntegrityError)


def test_conflict_error_is_an_operational_error():
    assert issubclass(errors.ConflictError, errors.OperationalError)
    assert issubclass(errors.ConflictError, sqlite3.OperationalError)
    assert issubclass(errors.ConflictError, sqlite3.DatabaseError)
    assert not issubclass(errors.ConflictError, sqlite3.IntegrityError)
    assert sqlite_concurrent.ConflictError is errors.ConflictError


def test_stdlib_except_clauses_catch_our_errors():
    caught = []
    for cls, stdlib_cls in (
        (errors.IntegrityError, sqlite3.IntegrityError),
        (errors.OperationalError, sqlite3.OperationalError),
        (errors.ProgrammingError, sqlite3.ProgrammingError),
        (errors.ConflictError, sqlite3.OperationalError),
        (errors.NotSupportedError, sqlite3.DatabaseError),
    ):
        try:
            raise cls("boom")
        except stdlib_cls as e:
            caught.append(type(e))
    assert caught == [
        errors.IntegrityError,
        errors.OperationalError,
        errors.ProgrammingError,
        errors.ConflictError,
        errors.NotSupportedError,
    ]


def test_stdlib_except_clause_catches_a_real_integrity_error(tmp_path):
    conn = sqlite_concurrent.connect(str(tmp_path / "app.db"))
    try:
        conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY)")
        conn.execute("INSERT INTO t VALUES (1)")
        try:
            conn.execute("INSERT INTO t VALUES (1)")
        except sqlite3.IntegrityError as e:
            caught = e
        else:
            pytest.fail("duplicate key was accepted")
        assert isinstance(caught, errors.IntegrityError)
        assert "UNIQUE" in str(caught)
        conn.rollback()
    finally:
        conn.close()


# -- ConflictError fields and pickling -------------------------------------------------------------


def test_conflict_error_fields():
    e = errors.ConflictError("lost", table="t", key=(7,), kind="notfound", retryable=False)
    assert str(e) == "lost"
    assert (e.table, e.key, e.kind, e.retryable) == ("t", (7,), "notfound", False)


def test_conflict_error_defaults():
    e = errors.ConflictError("lost")
    assert (e.table, e.key, e.kind, e.retryable) == (None, None, "data", True)


@pytest.mark.parametrize(
    "fields",
    [
        {"table": "accounts", "key": (42,), "kind": "data", "retryable": True},
        {"table": "kv", "key": ("a", 3, b"\x00"), "kind": "conflict", "retryable": False},
        {"table": None, "key": None, "kind": "schema", "retryable": True},
        {"table": "t", "key": (1.5, None), "kind": "foreign_key", "retryable": False},
    ],
)
@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_conflict_error_pickles_with_all_fields(fields, protocol):
    original = errors.ConflictError("conflict: some message", **fields)
    copy = pickle.loads(pickle.dumps(original, protocol=protocol))
    assert type(copy) is errors.ConflictError
    assert str(copy) == "conflict: some message"
    assert copy.args == original.args
    assert (copy.table, copy.key, copy.kind, copy.retryable) == (
        fields["table"],
        fields["key"],
        fields["kind"],
        fields["retryable"],
    )
    assert isinstance(copy, sqlite3.OperationalError)


@pytest.mark.parametrize("name", STDLIB_NAMES)
def test_other_errors_pickle(name):
    cls = getattr(errors, name)
    copy = pickle.loads(pickle.dumps(cls("message")))
    assert type(copy) is cls
    assert str(copy) == "message"


# -- real conflicts between two connections --------------------------------------------------------


@pytest.fixture
def db_path(tmp_path):
    return str(tmp_path / "app.db")


@pytest.fixture
def connect(db_path):
    """Open sqlite_concurrent connections on one file; all are closed at teardown.

    Optimistic unless told otherwise: these tests overlap two transactions in one thread to
    make them conflict."""
    opened = []

    def _connect(**kwargs):
        kwargs.setdefault("mode", "optimistic")
        conn = sqlite_concurrent.connect(db_path, **kwargs)
        opened.append(conn)
        return conn

    yield _connect
    for conn in reversed(opened):
        conn.close()


@pytest.fixture
def pair(connect):
    """Two connections on a file with ``acct(id PK, owner, balance, email UNIQUE)``."""
    first, second = connect(), connect()
    first.execute(
        "CREATE TABLE acct(id INTEGER PRIMARY KEY, owner TEXT, balance INTEGER, email TEXT UNIQUE)"
    )
    first.executemany(
        "INSERT INTO acct VALUES (?, ?, ?, ?)",
        [(1, "ann", 100, "ann@x"), (2, "bob", 200, "bob@x")],
    )
    first.commit()
    return first, second


def rows(conn, table="acct"):
    return conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()


def test_second_committer_of_the_same_row_gets_conflict_error(pair):
    first, second = pair
    first.execute("UPDATE acct SET balance = 111 WHERE id = 1")
    second.execute("UPDATE acct SET balance = 222 WHERE id = 1")
    first.commit()
    with pytest.raises(sqlite_concurrent.ConflictError) as exc_info:
        second.commit()
    e = exc_info.value
    assert (e.table, e.key, e.kind, e.retryable) == ("acct", (1,), "data", True)
    assert isinstance(e, sqlite3.OperationalError)
    assert not second.in_transaction
    assert rows(second) == [(1, "ann", 111, "ann@x"), (2, "bob", 200, "bob@x")]
    assert rows(first) == rows(second)


def test_conflicted_connection_can_retry_and_commit(pair):
    first, second = pair
    first.execute("UPDATE acct SET balance = balance + 1 WHERE id = 1")
    second.execute("UPDATE acct SET balance = balance + 10 WHERE id = 1")
    first.commit()
    with pytest.raises(sqlite_concurrent.ConflictError):
        second.commit()
    second.execute("UPDATE acct SET balance = balance + 10 WHERE id = 1")
    second.commit()
    assert rows(first)[0] == (1, "ann", 111, "ann@x")


def test_conflict_rolls_back_the_whole_losing_transaction(pair):
    first, second = pair
    first.execute("UPDATE acct SET balance = 0 WHERE id = 1")
    second.execute("UPDATE acct SET owner = 'bobby' WHERE id = 2")  # no conflict on its own
    second.execute("INSERT INTO acct VALUES (3, 'cy', 300, 'cy@x')")
    second.execute("UPDATE acct SET balance = 5 WHERE id = 1")
    first.commit()
    with pytest.raises(sqlite_concurrent.ConflictError):
        second.commit()
    assert rows(first) == [(1, "ann", 0, "ann@x"), (2, "bob", 200, "bob@x")]


def test_updates_of_different_columns_of_one_row_still_conflict(pair):
    """Snapshot isolation: the first committer of a row wins, whatever columns it changed."""
    first, second = pair
    first.execute("UPDATE acct SET balance = 150 WHERE id = 1")
    second.execute("UPDATE acct SET owner = 'anna' WHERE id = 1")
    first.commit()
    with pytest.raises(sqlite_concurrent.ConflictError) as exc_info:
        second.commit()
    e = exc_info.value
    assert (e.table, e.key, e.kind) == ("acct", (1,), "data")
    assert rows(first)[0] == (1, "ann", 150, "ann@x")


def test_updates_of_different_rows_both_commit(pair):
    first, second = pair
    first.execute("UPDATE acct SET balance = 1 WHERE id = 1")
    second.execute("UPDATE acct SET balance = 2 WHERE id = 2")
    first.commit()
    second.commit()
    assert rows(first) == [(1, "ann", 1, "ann@x"), (2, "bob", 2, "bob@x")]


def test_update_of_a_row_deleted_meanwhile_is_notfound(pair):
    first, second = pair
    first.execute("DELETE FROM acct WHERE id = 2")
    second.execute("UPDATE acct SET balance = 0 WHERE id = 2")
    first.commit()
    with pytest.raises(sqlite_concurrent.ConflictError) as exc_info:
        second.commit()
    e = exc_info.value
    assert (e.table, e.key, e.kind) == ("acct", (2,), "notfound")
    assert rows(first) == [(1, "ann", 100, "ann@x")]


def test_delete_of_a_row_updated_meanwhile_conflicts(pair):
    first, second = pair
    first.execute("UPDATE acct SET balance = 0 WHERE id = 2")
    second.execute("DELETE FROM acct WHERE id = 2")
    first.commit()
    with pytest.raises(sqlite_concurrent.ConflictError) as exc_info:
        second.commit()
    assert (exc_info.value.table, exc_info.value.key) == ("acct", (2,))
    assert exc_info.value.kind == "data"
    assert rows(first)[1] == (2, "bob", 0, "bob@x")


def test_insert_of_the_same_primary_key_is_conflict(pair):
    first, second = pair
    first.execute("INSERT INTO acct VALUES (3, 'cy', 1, 'cy@x')")
    second.execute("INSERT INTO acct VALUES (3, 'dee', 2, 'dee@x')")
    first.commit()
    with pytest.raises(sqlite_concurrent.ConflictError) as exc_info:
        second.commit()
    e = exc_info.value
    assert (e.table, e.key, e.kind) == ("acct", (3,), "conflict")
    assert rows(first)[2] == (3, "cy", 1, "cy@x")


def test_unique_collision_on_a_non_key_column_is_constraint(pair):
    first, second = pair
    first.execute("INSERT INTO acct VALUES (3, 'cy', 1, 'same@x')")
    second.execute("INSERT INTO acct VALUES (4, 'dee', 2, 'same@x')")
    first.commit()
    with pytest.raises(sqlite_concurrent.ConflictError) as exc_info:
        second.commit()
    e = exc_info.value
    assert (e.table, e.key, e.kind) == ("acct", (4,), "constraint")
    assert [r[0] for r in rows(first)] == [1, 2, 3]


def test_conflict_on_a_rowid_table_reports_the_rowid(pair):
    first, second = pair
    first.execute("CREATE TABLE notes(body TEXT)")
    first.executemany("INSERT INTO notes VALUES (?)", [("a",), ("b",)])
    first.commit()
    first.execute("UPDATE notes SET body = 'first' WHERE body = 'b'")
    second.execute("UPDATE notes SET body = 'second' WHERE body = 'b'")
    first.commit()
    with pytest.raises(sqlite_concurrent.ConflictError) as exc_info:
        second.commit()
    e = exc_info.value
    assert (e.table, e.key, e.kind) == ("notes", (2,), "data")
    assert rows(first, "notes") == [("a",), ("first",)]


def test_conflict_on_a_without_rowid_table_reports_the_composite_key(pair):
    first, second = pair
    first.execute("CREATE TABLE kv(ns TEXT, k INTEGER, v, PRIMARY KEY(ns, k)) WITHOUT ROWID")
    first.executemany("INSERT INTO kv VALUES (?, ?, ?)", [("a", 1, 0), ("a", 2, 0)])
    first.commit()
    first.execute("UPDATE kv SET v = 1 WHERE ns = 'a' AND k = 2")
    second.execute("UPDATE kv SET v = 2 WHERE ns = 'a' AND k = 2")
    second.execute("UPDATE kv SET v = 2 WHERE ns = 'a' AND k = 1")
    first.commit()
    with pytest.raises(sqlite_concurrent.ConflictError) as exc_info:
        second.commit()
    e = exc_info.value
    assert (e.table, e.key, e.kind) == ("kv", ("a", 2), "data")
    assert rows(first, "kv") == [("a", 1, 0), ("a", 2, 1)]


def test_conflict_error_from_a_real_conflict_pickles(pair):
    first, second = pair
    first.execute("UPDATE acct SET balance = 1 WHERE id = 1")
    second.execute("UPDATE acct SET balance = 2 WHERE id = 1")
    first.commit()
    with pytest.raises(sqlite_concurrent.ConflictError) as exc_info:
        second.commit()
    copy = pickle.loads(pickle.dumps(exc_info.value))
    assert (copy.table, copy.key, copy.kind, copy.retryable) == ("acct", (1,), "data", True)
    assert str(copy) == str(exc_info.value)


def test_conflict_through_context_manager_propagates_and_rolls_back(pair):
    first, second = pair
    first.execute("UPDATE acct SET balance = 1 WHERE id = 1")
    with pytest.raises(sqlite_concurrent.ConflictError), second:
        second.execute("UPDATE acct SET balance = 2 WHERE id = 1")
        first.commit()
    assert not second.in_transaction
    assert rows(second)[0] == (1, "ann", 1, "ann@x")


# -- transact() ------------------------------------------------------------------------------------


def test_transact_returns_the_functions_value_and_commits(pair):
    first, second = pair

    def move(conn, amount, *, to):
        conn.execute("UPDATE acct SET balance = balance - ? WHERE id = 1", (amount,))
        conn.execute("UPDATE acct SET balance = balance + ? WHERE id = ?", (amount, to))
        return conn.execute("SELECT balance FROM acct WHERE id = 1").fetchone()[0]

    assert first.transact(move, 30, to=2) == 70
    assert not first.in_transaction
    assert rows(second) == [(1, "ann", 70, "ann@x"), (2, "bob", 230, "bob@x")]


def make_conflicting_fn(other, conflict_on_attempts):
    """fn for transact(): on the listed attempts, ``other`` commits to row 1 after fn's read.

    As with SQLite's BEGIN DEFERRED, the snapshot is taken by the first statement, so fn reads
    before the other commit lands.
    """
    attempts = []

    def fn(conn):
        attempts.append(len(attempts) + 1)
        conn.execute("SELECT balance FROM acct WHERE id = 1").fetchone()
        if len(attempts) in conflict_on_attempts:
            other.execute("UPDATE acct SET balance = balance + 100 WHERE id = 1")
            other.commit()
        conn.execute("UPDATE acct SET balance = balance + 1 WHERE id = 1")
        return f"attempt {len(attempts)}"

    return fn, attempts


def test_transact_retries_after_a_conflict(pair):
    first, second = pair
    fn, attempts = make_conflicting_fn(second, conflict_on_attempts={1})
    assert first.transact(fn) == "attempt 2"
    assert attempts == [1, 2]
    assert not first.in_transaction
    # The retry ran on a fresh snapshot: both increments are in.
    assert rows(second)[0] == (1, "ann", 201, "ann@x")


def test_transact_retries_several_conflicts(pair):
    first, second = pair
    fn, attempts = make_conflicting_fn(second, conflict_on_attempts={1, 2, 3})
    assert first.transact(fn, retries=3) == "attempt 4"
    assert attempts == [1, 2, 3, 4]
    assert rows(second)[0] == (1, "ann", 401, "ann@x")


def test_transact_with_zero_retries_raises_the_conflict(pair):
    first, second = pair
    fn, attempts = make_conflicting_fn(second, conflict_on_attempts={1})
    with pytest.raises(sqlite_concurrent.ConflictError) as exc_info:
        first.transact(fn, retries=0)
    assert (exc_info.value.table, exc_info.value.key) == ("acct", (1,))
    assert attempts == [1]
    assert not first.in_transaction
    assert rows(first)[0] == (1, "ann", 200, "ann@x")


def test_transact_raises_the_conflict_after_the_last_retry(pair):
    first, second = pair
    fn, attempts = make_conflicting_fn(second, conflict_on_attempts={1, 2, 3})
    with pytest.raises(sqlite_concurrent.ConflictError):
        first.transact(fn, retries=2)
    assert attempts == [1, 2, 3]
    assert not first.in_transaction
    assert rows(first)[0] == (1, "ann", 400, "ann@x")


@pytest.mark.parametrize(
    "failure",
    ["python-exception", "integrity-error", "syntax-error"],
)
def test_transact_does_not_retry_other_errors(pair, failure):
    first, second = pair
    attempts = []

    def fn(conn):
        attempts.append(1)
        conn.execute("UPDATE acct SET balance = 0 WHERE id = 1")
        if failure == "python-exception":
            raise KeyError("not a conflict")
        if failure == "integrity-error":
            conn.execute("INSERT INTO acct VALUES (2, 'dup', 0, 'dup@x')")
        conn.execute("UPDATE acct SET")

    expected = {
        "python-exception": KeyError,
        "integrity-error": sqlite3.IntegrityError,
        "syntax-error": sqlite3.OperationalError,
    }[failure]
    with pytest.raises(expected) as exc_info:
        first.transact(fn)
    assert not isinstance(exc_info.value, sqlite_concurrent.ConflictError)
    assert attempts == [1]
    assert not first.in_transaction
    assert rows(second)[0] == (1, "ann", 100, "ann@x")
    # The connection is usable afterwards.
    first.execute("UPDATE acct SET balance = 5 WHERE id = 1")
    first.commit()
    assert rows(second)[0] == (1, "ann", 5, "ann@x")


def test_transact_inside_an_open_transaction_is_refused(pair):
    first, _ = pair
    first.execute("UPDATE acct SET balance = 0 WHERE id = 1")
    with pytest.raises(sqlite3.ProgrammingError):
        first.transact(lambda conn: None)
    assert first.in_transaction
    first.rollback()


def test_transact_function_that_writes_nothing(pair):
    first, _ = pair
    assert first.transact(lambda conn: conn.execute("SELECT count(*) FROM acct").fetchone()) == (2,)
    assert not first.in_transaction
