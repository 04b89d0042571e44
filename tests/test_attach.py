"""Attached databases work as on the stdlib's one connection, inside and outside transactions.

Reads run wherever the statement runs (the file is attached to every SQLite connection of
ours); writes to an attached file run on the merger as exclusive operations; an attached
in-memory database lives on the merger alone, like TEMP objects.  Each scenario runs through
both modules on files (``{dir}`` is each one's own directory) and must give the same rows and
errors.
"""

from __future__ import annotations

import sqlite3

import pytest
from conftest import SPAWN, run_workers
from stdlib_steps import outcome, same_as_stdlib
from workers import temp_attached_savepoints

import sqlite_concurrent

pytestmark = pytest.mark.timeout(60)

ISOLATION = pytest.mark.parametrize("isolation_level", ["", None], ids=["deferred", "autocommit"])
ATTACH = "ATTACH DATABASE '{dir}/other.db' AS other"


@ISOLATION
def test_attached_file_reads_and_writes_outside_transactions(tmp_path, isolation_level):
    same_as_stdlib(
        tmp_path,
        [
            ATTACH,
            "CREATE TABLE other.t(a INTEGER PRIMARY KEY, b)",
            "ids: INSERT INTO other.t(b) VALUES ('x')",
            "SELECT * FROM other.t",
            "commit",
            "SELECT * FROM other.t",
            "SELECT * FROM t",  # unqualified: found in the attached database
            "ids: INSERT INTO t(b) VALUES ('y')",
            "commit",
            "SELECT * FROM other.t ORDER BY a",
            "SELECT name FROM other.sqlite_master",
            "PRAGMA other.table_info(t)",
            "SELECT name FROM pragma_database_list ORDER BY seq",
            "PRAGMA database_list",
            "in_transaction",
        ],
        isolation_level=isolation_level,
    )


@ISOLATION
def test_attached_file_inside_transactions(tmp_path, isolation_level):
    same_as_stdlib(
        tmp_path,
        [
            "CREATE TABLE m(x)",
            ATTACH,
            "CREATE TABLE other.t(a)",
            "INSERT INTO other.t VALUES (1)",
            "commit",
            "BEGIN",
            "INSERT INTO m VALUES (10)",
            "SELECT * FROM other.t",  # a read inside a transaction
            "INSERT INTO m SELECT a FROM other.t",
            "SELECT * FROM m ORDER BY x",
            "COMMIT",
            "BEGIN",
            "INSERT INTO m VALUES (20)",
            "INSERT INTO other.t VALUES (2)",  # a write: the transaction goes exclusive
            "UPDATE other.t SET a = a + (SELECT max(x) FROM m)",
            "SELECT * FROM other.t ORDER BY a",
            "ROLLBACK",
            "SELECT * FROM other.t ORDER BY a",
            "SELECT * FROM m ORDER BY x",
            "BEGIN",
            "DELETE FROM other.t",
            "INSERT INTO m VALUES (30)",
            "COMMIT",
            "SELECT * FROM other.t",
            "SELECT * FROM m ORDER BY x",
        ],
        isolation_level=isolation_level,
    )


@ISOLATION
def test_attach_and_detach_errors_and_timing(tmp_path, isolation_level):
    same_as_stdlib(
        tmp_path,
        [
            "CREATE TABLE m(x)",
            ATTACH,
            ATTACH,
            "CREATE TABLE other.t(a)",
            "INSERT INTO other.t VALUES (1)",
            "commit",
            "DETACH DATABASE nosuch",
            "BEGIN",
            "INSERT INTO m VALUES (1)",
            "DETACH other",  # not used by this transaction: allowed
            "SELECT * FROM other.t",
            "ATTACH '{dir}/other.db' AS other",  # allowed inside a transaction too
            "SELECT * FROM other.t",
            "DETACH other",  # used by this transaction now
            "COMMIT",
            "DETACH other",
            "SELECT * FROM other.t",
            "SELECT name FROM pragma_database_list ORDER BY seq",
        ],
        isolation_level=isolation_level,
    )


@ISOLATION
def test_attached_memory_database(tmp_path, isolation_level):
    same_as_stdlib(
        tmp_path,
        [
            "CREATE TABLE m(x)",
            "ATTACH ':memory:' AS mem",
            "CREATE TABLE mem.z(a)",
            "INSERT INTO mem.z VALUES (1)",
            "SELECT * FROM mem.z",
            "commit",
            "BEGIN",
            "INSERT INTO mem.z VALUES (2)",
            "INSERT INTO m SELECT a FROM mem.z",
            "ROLLBACK",
            "SELECT * FROM mem.z",
            "SELECT * FROM m",
            "INSERT INTO m SELECT a * 10 FROM mem.z",
            "commit",
            "SELECT * FROM m",
            "SELECT name FROM pragma_database_list ORDER BY seq",
            "DETACH mem",
            "SELECT * FROM mem.z",
            "ATTACH '' AS scratch",
            "CREATE TABLE scratch.s(a)",
            "SELECT name FROM scratch.sqlite_master",
        ],
        isolation_level=isolation_level,
    )


@ISOLATION
def test_attach_in_a_script_and_by_uri(tmp_path, isolation_level):
    same_as_stdlib(
        tmp_path,
        [
            "script: ATTACH '{dir}/other.db' AS other; CREATE TABLE other.t(a);"
            " INSERT INTO other.t VALUES (1);",
            "SELECT * FROM other.t",
            "ATTACH 'file:{dir}/other.db?mode=ro' AS ro",
            "SELECT * FROM ro.t",
            "INSERT INTO ro.t VALUES (2)",
            "rollback",
            "SELECT * FROM other.t",
        ],
        isolation_level=isolation_level,
    )


@pytest.mark.parametrize("mod", [sqlite3, sqlite_concurrent], ids=["sqlite3", "ours"])
def test_attachments_are_per_connection(tmp_path, mod):
    path = str(tmp_path / "app.db")
    first = mod.connect(path, isolation_level=None)
    second = mod.connect(path, isolation_level=None)
    try:
        first.execute(f"ATTACH '{tmp_path}/other.db' AS other")
        first.execute("CREATE TABLE other.t(a)")
        assert outcome(second, "SELECT * FROM other.t") == (
            "OperationalError",
            "no such table: other.t",
        )
    finally:
        first.close()
        second.close()
    third = mod.connect(path)
    try:
        assert outcome(third, "SELECT * FROM other.t") == (
            "OperationalError",
            "no such table: other.t",
        )
    finally:
        third.close()


def _write_other(path: str, value: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("INSERT INTO t VALUES (?)", (value,))
    conn.close()


@ISOLATION
def test_ours_reads_of_an_attached_file_see_other_processes_writes(tmp_path, isolation_level):
    other = str(tmp_path / "other.db")
    conn = sqlite_concurrent.connect(str(tmp_path / "app.db"), isolation_level=isolation_level)
    try:
        conn.execute("CREATE TABLE m(x)")
        conn.commit()
        conn.execute(f"ATTACH '{other}' AS other")
        conn.execute("CREATE TABLE other.t(a)")
        conn.commit()
        for value in (1, 2):
            writer = SPAWN.Process(target=_write_other, args=(other, value))
            writer.start()
            writer.join(30)
            assert writer.exitcode == 0
            if value == 1:
                assert conn.execute("SELECT * FROM other.t").fetchall() == [(1,)]
                continue
            conn.execute("BEGIN")
            conn.execute("INSERT INTO m VALUES (1)")
            assert conn.execute("SELECT * FROM other.t ORDER BY a").fetchall() == [(1,), (2,)]
            conn.execute("COMMIT")
    finally:
        conn.close()


@ISOLATION
def test_blobs_of_attached_and_temp_tables(tmp_path, isolation_level):
    def run(mod, where):
        conn = mod.connect(str(where / "app.db"), isolation_level=isolation_level)
        try:
            conn.execute(f"ATTACH '{where}/other.db' AS other")
            conn.execute("CREATE TABLE other.b(data)")
            conn.execute("INSERT INTO other.b VALUES (zeroblob(4))")
            conn.execute("CREATE TEMP TABLE tb(data)")
            conn.execute("INSERT INTO tb VALUES (zeroblob(4))")
            conn.commit()
            with conn.blobopen("b", "data", 1, name="other") as blob:
                blob.write(b"ab")
            with conn.blobopen("tb", "data", 1, name="temp") as blob:
                blob.write(b"cd")
            conn.commit()
            with conn.blobopen("b", "data", 1, name="other", readonly=True) as blob:
                first = blob.read()
            with conn.blobopen("tb", "data", 1, name="temp", readonly=True) as blob:
                second = blob.read()
            return first, second, conn.execute("SELECT data FROM other.b").fetchall()
        finally:
            conn.close()

    (tmp_path / "ours").mkdir()
    (tmp_path / "stdlib").mkdir()
    assert run(sqlite_concurrent, tmp_path / "ours") == run(sqlite3, tmp_path / "stdlib")


@ISOLATION
def test_schema_changes_in_an_attached_database(tmp_path, isolation_level):
    same_as_stdlib(
        tmp_path,
        [
            "CREATE TABLE m(x)",
            ATTACH,
            "CREATE TABLE other.t(a)",
            "INSERT INTO other.t VALUES (1)",
            "commit",
            "BEGIN",
            "INSERT INTO m VALUES (1)",
            "columns: SELECT * FROM other.t",
            "COMMIT",
            "ALTER TABLE other.t ADD COLUMN b DEFAULT 'b'",
            "CREATE INDEX other.ix ON t(b)",
            "commit",
            "columns: SELECT * FROM other.t",
            "BEGIN",
            "INSERT INTO m VALUES (2)",
            "columns: SELECT * FROM other.t",
            "COMMIT",
            "SELECT name FROM other.sqlite_master ORDER BY name",
            "DROP TABLE other.t",
            "SELECT * FROM other.t",
        ],
        isolation_level=isolation_level,
    )


@pytest.mark.parametrize("mod", [sqlite3, sqlite_concurrent], ids=["sqlite3", "ours"])
def test_blob_of_a_table_created_since_the_last_read(tmp_path, mod):
    """The schema a blob handle looks its table up in is the one SQLite last loaded on the
    connection it opens on; ours has several, and the table was created on another."""
    conn = mod.connect(str(tmp_path / "app.db"), isolation_level=None)
    try:
        conn.execute("SELECT 1 FROM sqlite_master").fetchall()
        conn.execute("CREATE TABLE b(data)")
        conn.execute("INSERT INTO b VALUES (zeroblob(4))")
        with conn.blobopen("b", "data", 1) as blob:
            assert blob.read() == bytes(4)
    finally:
        conn.close()


def test_ours_four_processes_with_temp_tables_attached_files_and_savepoints(tmp_path):
    path, other = str(tmp_path / "app.db"), str(tmp_path / "other.db")
    setup = sqlite_concurrent.connect(path)
    setup.execute("CREATE TABLE m(writer, i)")
    setup.execute(f"ATTACH '{other}' AS other")
    setup.execute("CREATE TABLE other.log(writer, i)")
    setup.commit()
    setup.close()
    results = run_workers(temp_attached_savepoints, [(path, other, w, 10) for w in range(4)])
    assert sorted(results) == [(w, 10) for w in range(4)]
    check = sqlite3.connect(path)
    check.execute(f"ATTACH '{other}' AS other")
    expected = [(w, i) for w in range(4) for i in range(10)]
    assert check.execute("SELECT * FROM m ORDER BY writer, i").fetchall() == expected
    assert check.execute("SELECT * FROM other.log ORDER BY writer, i").fetchall() == expected
    assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    check.close()
