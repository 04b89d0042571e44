"""TEMP tables, views and triggers behave exactly as on the stdlib's one connection.

They are per connection: visible to every later statement of the connection (autocommit reads,
transactions, scripts), invisible to other connections, gone at close, and writes to them roll
back with their transaction.  Each scenario runs through both modules on files and must give
the same rows and errors.
"""

from __future__ import annotations

import os
import signal
import sqlite3

import pytest
from conftest import wait_until
from stdlib_steps import outcome, same_as_stdlib
from test_group_commit import _ready, _start, _stop_outside_guard

import sqlite_concurrent
from sqlite_concurrent.locking import oslock

pytestmark = pytest.mark.timeout(60)

ISOLATION = pytest.mark.parametrize("isolation_level", ["", None], ids=["deferred", "autocommit"])


@ISOLATION
def test_temp_table_is_visible_to_later_statements(tmp_path, isolation_level):
    same_as_stdlib(
        tmp_path,
        [
            "CREATE TEMP TABLE t(a)",
            "INSERT INTO t VALUES (1)",
            "SELECT * FROM t",
            "commit",
            "SELECT * FROM t",
            "CREATE TABLE temp.u(b)",
            "INSERT INTO temp.u VALUES (2)",
            "SELECT * FROM u",
            "PRAGMA table_info(u)",
            "PRAGMA temp.table_info(t)",
            "SELECT type, name FROM sqlite_temp_master ORDER BY name",
            "SELECT name FROM sqlite_master WHERE name IN ('t', 'u')",
            "DROP TABLE t",
            "SELECT * FROM t",
        ],
        isolation_level=isolation_level,
    )


@ISOLATION
def test_temp_table_shadows_a_main_table_of_the_same_name(tmp_path, isolation_level):
    same_as_stdlib(
        tmp_path,
        [
            "CREATE TABLE m(x)",
            "INSERT INTO m VALUES ('main')",
            "commit",
            "CREATE TEMP TABLE m(x)",
            "INSERT INTO m VALUES ('temp')",
            "SELECT * FROM m",
            "SELECT * FROM main.m",
            "commit",
            "SELECT * FROM m",
            "DROP TABLE temp.m",
            "SELECT * FROM m",
        ],
        isolation_level=isolation_level,
    )


@ISOLATION
def test_temp_writes_roll_back_and_commit_with_their_transaction(tmp_path, isolation_level):
    same_as_stdlib(
        tmp_path,
        [
            "CREATE TABLE m(x)",
            "CREATE TEMP TABLE t(a)",
            "BEGIN",
            "INSERT INTO m VALUES (1)",
            "INSERT INTO t VALUES (1)",
            "SELECT * FROM t",
            "SELECT * FROM m",
            "ROLLBACK",
            "SELECT * FROM t",
            "SELECT * FROM m",
            "BEGIN",
            "INSERT INTO t VALUES (2)",
            "INSERT INTO m SELECT a * 10 FROM t",
            "COMMIT",
            "SELECT * FROM t",
            "SELECT * FROM m",
            "INSERT INTO t VALUES (3)",
            "rollback",
            "SELECT * FROM t",
        ],
        isolation_level=isolation_level,
    )


@ISOLATION
def test_temp_table_created_inside_a_transaction_rolls_back(tmp_path, isolation_level):
    same_as_stdlib(
        tmp_path,
        [
            "CREATE TABLE m(x)",
            "BEGIN",
            "INSERT INTO m VALUES (1)",
            "CREATE TEMP TABLE t(a)",
            "INSERT INTO t VALUES (1)",
            "SELECT * FROM t",
            "ROLLBACK",
            "SELECT * FROM t",
            "SELECT * FROM m",
        ],
        isolation_level=isolation_level,
    )


@ISOLATION
def test_temp_view_and_temp_trigger_on_a_main_table(tmp_path, isolation_level):
    same_as_stdlib(
        tmp_path,
        [
            "CREATE TABLE m(x)",
            "CREATE TABLE log(n)",
            "CREATE TEMP VIEW v AS SELECT x * 2 AS y FROM m",
            "CREATE TEMP TRIGGER tr AFTER INSERT ON m BEGIN INSERT INTO log VALUES (new.x); END",
            "CREATE TABLE other(z)",
            "INSERT INTO other VALUES (1)",  # a commit merged on our merger, triggers off
            "commit",
            "INSERT INTO m VALUES (5)",
            "commit",
            "SELECT * FROM v",
            "SELECT * FROM log",
            "BEGIN",
            "INSERT INTO m VALUES (6)",
            "SELECT * FROM log",
            "ROLLBACK",
            "SELECT * FROM log",
            "DROP TRIGGER tr",
            "INSERT INTO m VALUES (7)",
            "commit",
            "SELECT * FROM log",
            "SELECT * FROM v",
        ],
        isolation_level=isolation_level,
    )


@ISOLATION
def test_temp_objects_in_executescript(tmp_path, isolation_level):
    same_as_stdlib(
        tmp_path,
        [
            "script: CREATE TEMP TABLE s(a); INSERT INTO s VALUES (1); SELECT * FROM s;",
            "SELECT * FROM s",
            "script: BEGIN; INSERT INTO s VALUES (2); ROLLBACK; INSERT INTO s VALUES (3);",
            "SELECT * FROM s",
        ],
        isolation_level=isolation_level,
    )


@pytest.mark.parametrize("mod", [sqlite3, sqlite_concurrent], ids=["sqlite3", "ours"])
def test_temp_objects_are_invisible_to_other_connections_and_gone_at_close(tmp_path, mod):
    path = str(tmp_path / "app.db")
    first = mod.connect(path, isolation_level=None)
    second = mod.connect(path, isolation_level=None)
    try:
        first.execute("CREATE TEMP TABLE t(a)")
        first.execute("INSERT INTO t VALUES (1)")
        assert outcome(second, "SELECT * FROM t") == ("OperationalError", "no such table: t")
        second.execute("CREATE TEMP TABLE t(b)")  # each connection has its own
        second.execute("INSERT INTO t VALUES (2)")
        assert first.execute("SELECT * FROM t").fetchall() == [(1,)]
        assert second.execute("SELECT * FROM t").fetchall() == [(2,)]
    finally:
        first.close()
        second.close()
    third = mod.connect(path)
    try:
        assert outcome(third, "SELECT * FROM t") == ("OperationalError", "no such table: t")
    finally:
        third.close()


def test_ours_temp_only_statements_do_not_wait_for_other_transactions(tmp_path):
    """Outside a transaction, a statement that writes nothing but TEMP objects takes no lock:
    another connection's open transaction does not hold it up, as with the stdlib."""
    path = str(tmp_path / "app.db")
    writer = sqlite_concurrent.connect(path, lock_level="table")
    other = sqlite_concurrent.connect(path, isolation_level=None, timeout=0.5)
    try:
        writer.execute("CREATE TABLE m(x)")
        writer.commit()
        writer.execute("INSERT INTO m VALUES (1)")  # a transaction, visible in the lock database
        other.execute("CREATE TEMP TABLE t(a)")
        other.execute("INSERT INTO t SELECT count(*) FROM m")
        assert other.execute("SELECT * FROM t").fetchall() == [(0,)]
        writer.commit()
    finally:
        writer.close()
        other.close()


@pytest.mark.usefixtures("optimistic")  # the other process writes while this one's is open
def test_ours_temp_trigger_never_fires_for_another_process_s_rows(db_path):
    """SQLite leaves TEMP triggers on even where a connection turns triggers off, as the merger
    does to apply changesets: the merger of a connection with one must not apply the
    transactions of others (group commit), whose rows the trigger would otherwise hear."""
    setup = sqlite_concurrent.connect(db_path)
    setup.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER NOT NULL)")
    setup.execute("INSERT INTO t VALUES (0, 0)")
    setup.execute("CREATE TABLE mine(x)")
    setup.commit()
    setup.close()
    ours = sqlite_concurrent.connect(db_path, group_commit=True)
    ours.execute("CREATE TEMP TABLE heard(id)")
    ours.execute(
        "CREATE TEMP TRIGGER tr AFTER UPDATE ON t BEGIN INSERT INTO heard VALUES (new.id); END"
    )
    merge_lock = oslock.ByteLock(db_path + "-locks", oslock.MERGE)
    merge_lock.acquire()
    released = False
    proc = None
    try:
        proc, result = _start(db_path, [0], group_commit=True)
        wait_until(lambda: _ready(db_path) == 1, "the other process waits to commit")
        _stop_outside_guard(db_path, [proc])  # so that ours is the one that merges next
        merge_lock.release()
        released = True
        ours.execute("INSERT INTO mine VALUES (1)")
        ours.commit()
    finally:
        if not released:
            merge_lock.release()
        if proc is not None:
            os.kill(proc.pid, signal.SIGCONT)
    assert result.get(timeout=60) == "ok"
    proc.join(30)
    assert proc.exitcode == 0
    assert ours.execute("SELECT * FROM t").fetchall() == [(0, 1)]
    assert ours.execute("SELECT * FROM heard").fetchall() == []
    ours.close()


@ISOLATION
def test_lastrowid_is_the_connection_s_across_temp_and_schema_statements(tmp_path, isolation_level):
    """SQLite keeps the last inserted rowid per connection; statements that run on the merger
    (TEMP ones, schema changes) or in a new transaction see the one the stdlib would."""
    same_as_stdlib(
        tmp_path,
        [
            "CREATE TABLE m(x)",
            "ids: INSERT INTO m VALUES (1)",
            "ids: INSERT INTO m VALUES (2)",
            "commit",
            "ids: CREATE TEMP TABLE t(a)",
            "ids: SELECT 1",
            "ids: INSERT INTO t VALUES (7)",
            "commit",
            "ids: SELECT last_insert_rowid()",
            "BEGIN",
            "SELECT last_insert_rowid()",
            "ids: SELECT * FROM m",
            "ids: CREATE TABLE z(y)",
            "COMMIT",
            "ids: SELECT 1",
        ],
        isolation_level=isolation_level,
    )


@ISOLATION
def test_temp_table_read_for_no_column(tmp_path, isolation_level):
    same_as_stdlib(
        tmp_path,
        [
            "CREATE TEMP TABLE t(a)",
            "INSERT INTO t VALUES (1)",
            "SELECT count(*) FROM t",
            "SELECT 1 FROM t",
            "SELECT EXISTS (SELECT 1 FROM t)",
        ],
        isolation_level=isolation_level,
    )


@ISOLATION
def test_errors_of_statements_on_temp_tables(tmp_path, isolation_level):
    same_as_stdlib(
        tmp_path,
        [
            "CREATE TABLE m(x)",
            "CREATE TEMP TABLE t(a)",
            "SELECT nosuch FROM t",
            "INSERT INTO t(nosuch) VALUES (1)",
            "SELECT * FROM t WHERE",
            "BEGIN",
            "INSERT INTO m VALUES (1)",
            "UPDATE t SET nosuch = 1",
            "SELECT * FROM m",
            "in_transaction",
            "COMMIT",
            "CREATE TEMP TABLE t(b)",
        ],
        isolation_level=isolation_level,
    )


@ISOLATION
def test_table_valued_pragmas_see_temp_tables(tmp_path, isolation_level):
    same_as_stdlib(
        tmp_path,
        [
            "CREATE TABLE m(x)",
            "CREATE TEMP TABLE t(a, b)",
            "SELECT name FROM pragma_table_info('t')",
            "SELECT name FROM pragma_table_info('m')",
            "BEGIN",
            "INSERT INTO m VALUES (1)",
            "SELECT name FROM pragma_table_info('t')",
            "COMMIT",
            "SELECT * FROM m",
        ],
        isolation_level=isolation_level,
    )
