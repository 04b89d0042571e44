"""The stdlib ``sqlite3`` beside ours in one process, in every order of events.

The stdlib and APSW each carry a copy of SQLite, and closing any descriptor on a file drops every
POSIX lock the process holds on it: a stdlib connection that read a database ours had open and
then closed let the WAL be deleted under ours, and commits acknowledged after that were lost.
Whichever side opens second is refused before it touches the file; everything else (other files,
memory databases, stdlib connections closed before ours opened) works as before.  After each
scenario a fresh process must see every acknowledged row.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading

import pytest
from conftest import in_thread

import sqlite_concurrent
from sqlite_concurrent.process import foreign

pytestmark = pytest.mark.timeout(60)

_FRESH = """
import json, sqlite3, sys
c = sqlite3.connect(sys.argv[1])
rows = [r[0] for r in c.execute("SELECT x FROM t ORDER BY x")]
print(json.dumps([rows, c.execute("PRAGMA integrity_check").fetchone()[0]]))
c.close()
"""


def fresh_process_rows(path):
    """Rows of ``t`` as a new process sees them, after checking the file's integrity."""
    out = subprocess.run(
        [sys.executable, "-c", _FRESH, str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    rows, integrity = json.loads(out.stdout)
    assert integrity == "ok"
    return rows


def ours_with_a_row(path, **kwargs):
    conn = sqlite_concurrent.connect(path, **kwargs)
    conn.execute("CREATE TABLE t (x INTEGER)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    return conn


def commit_rows(conn, values):
    for x in values:
        conn.execute("INSERT INTO t VALUES (?)", (x,))
        conn.commit()


def identity(path):
    st = os.stat(path)
    return (st.st_dev, st.st_ino)


def assert_stdlib_refused(database, path, **kwargs):
    with pytest.raises(sqlite3.OperationalError) as info:
        sqlite3.connect(database, **kwargs)
    message = str(info.value)
    assert type(info.value) is sqlite3.OperationalError
    assert os.path.abspath(path) in message
    assert "two SQLite libraries in one process" in message
    assert "sqlite_concurrent.connect()" in message


def test_stdlib_connect_while_ours_is_open_is_refused_and_nothing_is_lost(db_path):
    conn = ours_with_a_row(db_path)
    assert_stdlib_refused(db_path, db_path)
    commit_rows(conn, [2, 3, 4, 5])
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (5,)
    assert fresh_process_rows(db_path) == [1, 2, 3, 4, 5]
    conn.close()
    assert fresh_process_rows(db_path) == [1, 2, 3, 4, 5]


def test_every_name_of_the_file_is_refused(db_path, tmp_path, monkeypatch):
    conn = ours_with_a_row(db_path)
    monkeypatch.chdir(tmp_path)
    os.symlink(db_path, tmp_path / "link.db")
    assert_stdlib_refused("app.db", db_path)
    assert_stdlib_refused(b"app.db", db_path)
    assert_stdlib_refused(tmp_path / "app.db", db_path)
    assert_stdlib_refused("link.db", "link.db")
    assert_stdlib_refused("file:app.db?mode=ro", db_path, uri=True)
    assert_stdlib_refused(f"file://{db_path}", db_path, uri=True)
    assert_stdlib_refused("file:app.db?mode=ro", db_path, uri=True, factory=sqlite3.Connection)
    with pytest.raises(sqlite3.OperationalError):
        sqlite3.Connection(db_path)
    commit_rows(conn, [2, 3])
    conn.close()
    assert fresh_process_rows(db_path) == [1, 2, 3]


def test_stdlib_on_the_lock_database_is_refused_too(db_path):
    conn = ours_with_a_row(db_path)
    assert_stdlib_refused(db_path + "-locks", db_path + "-locks")
    conn.close()


def test_stdlib_on_other_files_and_in_memory_works_while_ours_is_open(db_path, tmp_path):
    conn = ours_with_a_row(db_path)
    other = str(tmp_path / "other.db")
    names = [(other, False), (":memory:", False), ("", False)]
    names += [("file::memory:?cache=shared", True), (f"file:{db_path}?mode=memory", True)]
    for name, uri in names:
        stdlib = sqlite3.connect(name, uri=uri)
        stdlib.execute("CREATE TABLE t (x INTEGER)")
        stdlib.execute("INSERT INTO t VALUES (7)")
        stdlib.commit()
        assert stdlib.execute("SELECT x FROM t").fetchall() == [(7,)]
        stdlib.close()
    commit_rows(conn, [2, 3, 4, 5])
    conn.close()
    assert fresh_process_rows(db_path) == [1, 2, 3, 4, 5]
    assert fresh_process_rows(other) == [7]


def test_ours_while_a_stdlib_connection_is_open_is_refused_until_it_closes(db_path):
    stdlib = sqlite3.connect(db_path)
    stdlib.execute("PRAGMA journal_mode=WAL")
    stdlib.execute("CREATE TABLE t (x INTEGER)")
    stdlib.execute("INSERT INTO t VALUES (1)")
    stdlib.commit()
    for name, uri in [(db_path, False), (f"file:{db_path}?mode=ro", True)]:
        with pytest.raises(sqlite_concurrent.OperationalError) as info:
            sqlite_concurrent.connect(name, uri=uri)
        assert isinstance(info.value, sqlite3.OperationalError)
        assert db_path in str(info.value)
        assert "stdlib sqlite3 connection" in str(info.value)
    assert stdlib.execute("SELECT x FROM t").fetchall() == [(1,)]
    stdlib.execute("INSERT INTO t VALUES (2)")
    stdlib.commit()
    stdlib.close()
    conn = sqlite_concurrent.connect(db_path)
    commit_rows(conn, [3, 4])
    assert conn.execute("SELECT x FROM t ORDER BY x").fetchall() == [(1,), (2,), (3,), (4,)]
    conn.close()
    assert fresh_process_rows(db_path) == [1, 2, 3, 4]


_STDLIB_BEFORE_IMPORT = """
import json, sqlite3, sys
path = sys.argv[1]
stdlib = sqlite3.connect(path)
stdlib.execute("SELECT count(*) FROM t").fetchone()
import sqlite_concurrent
try:
    sqlite_concurrent.connect(path)
    refused = None
except sqlite3.OperationalError as e:
    refused = str(e)
stdlib.close()
conn = sqlite_concurrent.connect(path)
for x in (2, 3, 4, 5):
    conn.execute("INSERT INTO t VALUES (?)", (x,))
    conn.commit()
try:
    sqlite3.connect(path)
    late = None
except sqlite3.OperationalError as e:
    late = str(e)
conn.close()
print(json.dumps([refused, late]))
"""


def test_a_stdlib_connection_from_before_our_import_refuses_ours(db_path):
    setup = sqlite3.connect(db_path)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE t (x INTEGER)")
    setup.execute("INSERT INTO t VALUES (1)")
    setup.commit()
    setup.close()
    out = subprocess.run(
        [sys.executable, "-c", _STDLIB_BEFORE_IMPORT, db_path],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    refused, late = json.loads(out.stdout)
    assert refused is not None and "stdlib sqlite3 connection" in refused
    assert late is not None and "refused" in late
    assert fresh_process_rows(db_path) == [1, 2, 3, 4, 5]


def test_stdlib_opened_and_closed_before_ours_works(db_path):
    stdlib = sqlite3.connect(db_path)
    stdlib.execute("CREATE TABLE t (x INTEGER)")
    stdlib.execute("INSERT INTO t VALUES (1)")
    stdlib.commit()
    assert stdlib.execute("SELECT x FROM t").fetchall() == [(1,)]
    stdlib.close()
    conn = sqlite_concurrent.connect(db_path)
    commit_rows(conn, [2, 3, 4, 5])
    conn.close()
    assert fresh_process_rows(db_path) == [1, 2, 3, 4, 5]


def test_stdlib_after_ours_closed_is_refused_exactly_while_the_process_holds_the_file(db_path):
    """What stays open after the last close is up to the connection; the stdlib is refused
    for as long as any of it does, and works (without losing anything) once nothing does."""
    conn = ours_with_a_row(db_path)
    commit_rows(conn, [2])
    conn.close()
    if identity(db_path) in foreign.held():
        assert_stdlib_refused(db_path, db_path)
    else:
        stdlib = sqlite3.connect(db_path)
        assert stdlib.execute("SELECT x FROM t ORDER BY x").fetchall() == [(1,), (2,)]
        stdlib.close()
    conn = sqlite_concurrent.connect(db_path)
    commit_rows(conn, [3, 4])
    conn.close()
    assert fresh_process_rows(db_path) == [1, 2, 3, 4]


def test_ours_read_only_connection_keeps_the_stdlib_off_the_file(db_path):
    ours_with_a_row(db_path).close()
    reader = sqlite_concurrent.connect(f"file:{db_path}?mode=ro", uri=True)
    assert_stdlib_refused(db_path, db_path)
    assert reader.execute("SELECT x FROM t").fetchall() == [(1,)]
    reader.close()
    assert fresh_process_rows(db_path) == [1]


def test_a_file_held_open_directly_refuses_ours_until_it_closes(db_path):
    ours_in_child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, sqlite_concurrent as s; c = s.connect(sys.argv[1]); "
            "c.execute('CREATE TABLE t (x INTEGER)'); c.execute('INSERT INTO t VALUES (1)'); "
            "c.commit(); c.close()",
            db_path,
        ],
        check=True,
        timeout=30,
    )
    assert ours_in_child.returncode == 0
    with open(db_path, "rb") as copy:
        with pytest.raises(sqlite_concurrent.OperationalError, match="opened directly"):
            sqlite_concurrent.connect(db_path)
        assert copy.read(16) == b"SQLite format 3\x00"
    conn = sqlite_concurrent.connect(db_path)
    commit_rows(conn, [2])
    conn.close()
    assert fresh_process_rows(db_path) == [1, 2]


def test_connections_busy_in_another_thread_still_count(db_path):
    """A connection running a statement in another thread cannot be asked for its file."""
    conn = ours_with_a_row(db_path, check_same_thread=False)
    inside, release = threading.Event(), threading.Event()

    def wait_inside():
        inside.set()
        return int(release.wait(30))

    conn.create_function("wait_inside", 0, wait_inside)
    thread, done, outcome = in_thread(
        lambda: conn.execute("SELECT wait_inside() FROM t").fetchall()
    )
    try:
        assert inside.wait(30)
        assert_stdlib_refused(db_path, db_path)
        other = sqlite_concurrent.connect(db_path)
        commit_rows(other, [2])
        other.close()
    finally:
        release.set()
        assert done.wait(30)
        thread.join()
    assert outcome == [("ok", [(1,)])]
    conn.close()
    assert fresh_process_rows(db_path) == [1, 2]


def test_a_file_deleted_and_created_again_is_another_file(db_path):
    """Only what this process still has open counts: a database deleted with its -wal and -shm
    (test suites do it) leaves ours on the old files, and the stdlib may create a new one."""
    ours_with_a_row(db_path).close()
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db_path + suffix):
            os.remove(db_path + suffix)
    stdlib = sqlite3.connect(db_path)
    stdlib.execute("CREATE TABLE t (x INTEGER)")
    stdlib.execute("INSERT INTO t VALUES (9)")
    stdlib.commit()
    stdlib.close()
    assert fresh_process_rows(db_path) == [9]
