"""A closed database is complete in its main file, as after the stdlib's last close.

When a process's last connection to a database closes, SQLite checkpoints the WAL into the
database and deletes it (unless another process has the database open), so copying the file then
copies every commit: Django's parallel test runner clones its test database that way.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import threading

import pytest
from conftest import SPAWN, in_thread, integrity_ok, stock_apsw, wait_until

import sqlite_concurrent
from sqlite_concurrent.locking import publisher
from sqlite_concurrent.process import holding

pytestmark = pytest.mark.timeout(120)

ROWS = [(i, f"row {i}") for i in range(12)]


def _write_and_close_all(module, path: str) -> list[str]:
    """Rows in several transactions, a second connection opened and closed meanwhile, then
    every connection closed.  Returns the files left beside the database (ours keeps its lock
    database, which is not part of the data)."""
    conn = module.connect(path)
    if module is sqlite3:
        conn.execute("PRAGMA journal_mode=WAL")  # as ours always is
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    conn.commit()
    for row in ROWS[:4]:
        conn.execute("INSERT INTO t VALUES (?, ?)", row)
        conn.commit()
    second = module.connect(path)
    second.executemany("INSERT INTO t VALUES (?, ?)", ROWS[4:8])
    second.commit()
    second.close()
    with conn:
        conn.execute("BEGIN")
        conn.execute("SELECT count(*) FROM t").fetchone()
        conn.executemany("INSERT INTO t VALUES (?, ?)", ROWS[8:])
    conn.close()
    directory, name = os.path.split(path)
    return sorted(f for f in os.listdir(directory) if f.startswith(name) and f != name + "-locks")


def _copied_rows(path: str, copy: str) -> list[tuple[int, str]]:
    shutil.copyfile(path, copy)  # the main file only, as Django clones a test database
    conn = sqlite3.connect(copy)
    try:
        return conn.execute("SELECT id, v FROM t ORDER BY id").fetchall()
    finally:
        conn.close()


def test_a_closed_database_is_complete_in_its_main_file(tmp_path):
    outcomes = {}
    for module in (sqlite3, sqlite_concurrent):
        directory = tmp_path / module.__name__
        directory.mkdir()
        path = str(directory / "app.db")
        left = _write_and_close_all(module, path)
        outcomes[module.__name__] = (left, _copied_rows(path, str(directory / "copy.db")))
    assert outcomes["sqlite3"] == (["app.db"], ROWS)
    assert outcomes["sqlite_concurrent"] == outcomes["sqlite3"]


def _descriptors_under(directory) -> list[str]:
    """What this process's descriptors have open in ``directory``."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the listing's own descriptor, closed by now
            continue
        if target.startswith(str(directory)):
            found.append(target)
    return found


def test_reopening_after_the_last_close_works_and_keeps_no_descriptors(tmp_path):
    """Each last close lets go of everything; the next connection takes it all again."""

    def cycle(path: str, i: int) -> None:
        conn = sqlite_concurrent.connect(path)
        conn.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT)")
        conn.commit()
        conn.execute("INSERT INTO t VALUES (?, ?)", (i, f"row {i}"))
        conn.commit()
        conn.execute("BEGIN")  # a transaction on a snapshot and the overlay, too
        conn.execute("SELECT count(*) FROM t").fetchone()
        conn.execute("INSERT INTO t VALUES (?, ?)", (100 + i, f"row {100 + i}"))
        conn.commit()
        conn.close()

    same = str(tmp_path / "same.db")
    for i in range(21):
        cycle(same, i)  # one database reopened
        cycle(str(tmp_path / f"other{i}.db"), i)  # a new database each time (test suites)
        assert _descriptors_under(tmp_path) == []
    assert not os.path.exists(same + "-wal") and not os.path.exists(same + "-shm")
    expected = sorted((j, f"row {j}") for i in range(21) for j in (i, 100 + i))
    assert _copied_rows(same, str(tmp_path / "copy.db")) == expected


@pytest.mark.parametrize("in_transaction", [False, True])
def test_closing_here_leaves_another_process_undisturbed(db_path, tmp_path, in_transaction):
    """Our last close in this process while another process still has a connection (and a
    transaction whose snapshot predates our writes): nothing is checkpointed under it or lost,
    it commits on, and its own last close leaves the main file complete."""
    conn = sqlite_concurrent.connect(db_path)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", ROWS[:4])
    conn.commit()
    conn.close()
    from workers import hold_connection_then_write

    start, queue, ready, proceed = SPAWN.Event(), SPAWN.Queue(), SPAWN.Event(), SPAWN.Event()
    proc = SPAWN.Process(
        target=hold_connection_then_write,
        args=(start, queue, db_path, ready, proceed, in_transaction),
    )
    proc.start()
    try:
        start.set()
        assert ready.wait(60), "the other process never opened its connection"
        conn = sqlite_concurrent.connect(db_path)
        for row in ROWS[4:]:
            conn.execute("INSERT INTO t VALUES (?, ?)", row)
            conn.commit()
        conn.close()
        assert not holding.held(db_path)
        # Another process has the database open: SQLite's last close here leaves the WAL.
        assert os.path.exists(db_path + "-wal")
        locks = stock_apsw(db_path + "-locks")
        holders = [pid for (pid,) in locks.execute("SELECT pid FROM holders")]
        locks.close()
        assert holders == [proc.pid]
        proceed.set()
        assert queue.get(timeout=60) == (4, len(ROWS) + 5)
    finally:
        proceed.set()
        proc.join(60)
    assert proc.exitcode == 0
    assert not os.path.exists(db_path + "-wal")  # its close was the last one
    held_rows = [(100 + i, f"held {i}") for i in range(5)]
    assert _copied_rows(db_path, str(tmp_path / "copy.db")) == ROWS + held_rows
    assert integrity_ok(db_path)


def test_our_last_close_leaves_the_wal_to_another_descriptor_in_this_process(db_path):
    """Something else in the process has the WAL open when our last connection closes (a
    stdlib connection is refused at its open, see ``test_foreign_sqlite``; a plain ``open()``
    made after ours is not): closing our anchor would checkpoint and delete the WAL under it,
    so the anchor and descriptors stay."""
    setup = stock_apsw(db_path)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    setup.close()
    conn = sqlite_concurrent.connect(db_path)
    conn.execute("INSERT INTO t VALUES (1, 'ours')")
    conn.commit()
    with open(db_path + "-wal", "rb"):
        wal = os.stat(db_path + "-wal").st_ino
        conn.close()
        assert holding.held(db_path)
        assert os.stat(db_path + "-wal").st_ino == wal
    from workers import read_rows

    start, queue = SPAWN.Event(), SPAWN.Queue()
    proc = SPAWN.Process(target=read_rows, args=(start, queue, db_path, "SELECT * FROM t"))
    proc.start()
    start.set()
    assert queue.get(timeout=60) == [(1, "ours")]
    proc.join(60)


def test_held_says_whether_this_process_has_the_database_open(db_path, tmp_path):
    assert not holding.held(db_path)
    first = sqlite_concurrent.connect(db_path)
    second = sqlite_concurrent.connect(db_path)
    link = tmp_path / "link.db"
    link.symlink_to(db_path)
    assert holding.held(db_path) and holding.held(str(link))
    first.close()
    assert holding.held(db_path)
    second.close()
    assert not holding.held(db_path) and not holding.held(str(link))
    assert not holding.held(str(tmp_path / "missing.db"))


def _locked_by_this_process(path: str) -> bool:
    inode = os.stat(path).st_ino
    with open("/proc/locks") as f:
        for line in f:
            fields = line.split()
            mine = fields[1] == "POSIX" and int(fields[4]) == os.getpid()
            if mine and int(fields[5].split(":")[2]) == inode:
                return True
    return False


def test_threads_opening_and_closing_the_last_connections_at_once(db_path, tmp_path):
    """A connection opening while another thread's last close lets go waits for it: the
    descriptors close before the new connection takes its locks (closing them after would drop
    those locks)."""
    setup = sqlite_concurrent.connect(db_path)
    setup.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    setup.commit()
    setup.close()
    errors = []
    nthreads, cycles = 4, 20

    def writer(k: int) -> None:
        try:
            for i in range(cycles):
                conn = sqlite_concurrent.connect(db_path, timeout=60)
                conn.execute("BEGIN")  # on a snapshot, read through the process's descriptors
                conn.execute("SELECT count(*) FROM t").fetchone()
                conn.execute("INSERT INTO t VALUES (?, ?)", (k * 100 + i, f"thread {k}"))
                conn.commit()
                # Open, so the process must hold SQLite's shared lock on the file in the kernel.
                assert _locked_by_this_process(db_path), "a descriptor closed under our locks"
                conn.close()
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(nthreads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert not errors
    assert not holding.held(db_path)
    expected = sorted((k * 100 + i, f"thread {k}") for k in range(nthreads) for i in range(cycles))
    assert _copied_rows(db_path, str(tmp_path / "copy.db")) == expected
    assert integrity_ok(db_path)


def test_a_connection_opening_during_the_last_close_waits_for_it(db_path, monkeypatch):
    """Another thread opens the database while the last close is letting go (paused here
    inside it): the new connection waits until that is done, else the descriptors closing
    after it took its locks would drop them, and its own would be closed under it."""
    conn = sqlite_concurrent.connect(db_path, check_same_thread=False)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", ROWS)
    conn.commit()
    letting_go, resume = threading.Event(), threading.Event()
    stop = publisher.Publisher.stop

    def paused_stop(self):
        letting_go.set()
        assert resume.wait(60)
        stop(self)

    monkeypatch.setattr(publisher.Publisher, "stop", paused_stop)
    closer, _, closed = in_thread(conn.close)
    assert letting_go.wait(60)
    monkeypatch.setattr(publisher.Publisher, "stop", stop)

    def open_and_read():
        other = sqlite_concurrent.connect(db_path, check_same_thread=False)
        other.execute("BEGIN")  # a snapshot, read through the process's descriptors
        return other, other.execute("SELECT count(*) FROM t").fetchone()

    opener, opened, outcome = in_thread(open_and_read)
    # Either it waits for the close (right), or it got through meanwhile (wrong).
    wait_until(
        lambda: opened.is_set() or len(holding._cond._waiters) == 1,  # type: ignore[attr-defined]
        "the opener waits or has opened",
    )
    assert not opened.is_set(), "a connection opened while the last close was letting go"
    resume.set()
    closer.join(60)
    opener.join(60)
    assert closed == [("ok", None)]
    assert outcome[0][0] == "ok", outcome
    other, count = outcome[0][1]
    assert count == (len(ROWS),)
    other.rollback()
    assert _locked_by_this_process(db_path), "a descriptor closed under the new connection"
    other.execute("BEGIN")
    assert other.execute("SELECT count(*) FROM t").fetchone() == (len(ROWS),)
    other.rollback()
    other.close()
