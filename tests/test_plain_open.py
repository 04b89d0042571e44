"""The database file under a plain ``open()`` in the process that has it open.

``shutil.copy`` of an open database (Django's parallel test runner clones its test database so)
must copy every acknowledged commit, as with the stdlib, and closing that copy's descriptor, which
drops every POSIX lock the process holds on the file, must not let another process delete the
WAL our connections still write.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys

import pytest

import sqlite_concurrent

pytestmark = pytest.mark.timeout(120)

ROWS = [(i, f"row {i}") for i in range(6)]


def _in_another_process(path: str, sql: str) -> list[tuple]:
    """Open ``path`` with the stock ``sqlite3`` in a process of its own, run ``sql`` and close:
    a stock connection's close checkpoints and deletes the WAL when it finds itself the last."""
    code = (
        "import sqlite3, sys\n"
        "conn = sqlite3.connect(sys.argv[1])\n"
        "print(repr(conn.execute(sys.argv[2]).fetchall()))\n"
        "conn.close()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, path, sql], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return eval(done.stdout)


def _copy_while_open(module, path: str, copy: str) -> list[tuple]:
    conn = module.connect(path)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    conn.commit()
    for row in ROWS:
        conn.execute("INSERT INTO t VALUES (?, ?)", row)
        conn.commit()
    shutil.copy(path, copy)
    conn.close()
    return _in_another_process(copy, "SELECT * FROM t ORDER BY id")


def test_a_copy_of_the_open_database_holds_every_commit_as_with_the_stdlib(tmp_path):
    stdlib = _copy_while_open(sqlite3, str(tmp_path / "stdlib.db"), str(tmp_path / "s.db"))
    ours = _copy_while_open(sqlite_concurrent, str(tmp_path / "ours.db"), str(tmp_path / "o.db"))
    assert stdlib == ROWS
    assert ours == stdlib


@pytest.mark.parametrize("forked_child", [False, True])
def test_closing_a_plain_descriptor_on_the_database_loses_no_commit(db_path, forked_child):
    """The copy's close drops the process's POSIX locks on the file, among them SQLite's
    SHARED lock; a stock process that then opens and closes the database must still not take
    it for its last user and delete the WAL, or the commits that follow are lost.  A forked
    child that exits (closing its copies of the parent's descriptors) changes nothing."""
    conn = sqlite_concurrent.connect(db_path)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    conn.commit()
    for row in ROWS[:3]:
        conn.execute("INSERT INTO t VALUES (?, ?)", row)
        conn.commit()
    if forked_child:
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        assert os.waitpid(pid, 0)[1] == 0
    with open(db_path, "rb") as f:
        assert f.read(16) == b"SQLite format 3\x00"
    assert _in_another_process(db_path, "SELECT count(*) FROM t") == [(3,)]
    assert os.path.exists(db_path + "-wal")
    for row in ROWS[3:]:
        conn.execute("INSERT INTO t VALUES (?, ?)", row)
        conn.commit()
    assert _in_another_process(db_path, "SELECT * FROM t ORDER BY id") == ROWS
    conn.close()
    assert _in_another_process(db_path, "SELECT * FROM t ORDER BY id") == ROWS
    # The guard let go with the last connection: SQLite's last close checkpointed.
    assert not os.path.exists(db_path + "-wal")


def test_a_plain_open_of_the_shm_is_refused_while_the_database_is_open(db_path):
    conn = sqlite_concurrent.connect(db_path)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY)")
    conn.commit()
    with pytest.raises(OSError, match="-shm would drop the locks") as refused:
        open(db_path + "-shm", "rb").close()
    assert refused.value.filename == db_path + "-shm"
    with open(db_path + "-wal", "rb") as f:  # no lock lives on the WAL
        assert f.read(4) in (b"\x37\x7f\x06\x82", b"\x37\x7f\x06\x83")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    conn.close()
    assert _in_another_process(db_path, "SELECT * FROM t") == [(1,)]
