"""Restart checkpoints do not hold writers back for a reader they cannot outwait, and
``status`` names the reader that pins the WAL (architecture.md, "Checkpoints")."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time

import apsw
import pytest

import sqlite_concurrent
from sqlite_concurrent.cli import status

# Tests of the optimistic machinery: snapshots pin the WAL while transactions overlap.
pytestmark = pytest.mark.usefixtures("optimistic")

PAGE = 4096
WAL_LIMIT = 64 * PAGE  # a restart is due once the WAL passes ~51 frames
BLOB = 80 * PAGE  # one commit of this passes the trigger


def _setup(path: str) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    conn.execute("INSERT INTO t VALUES (1, 0)")
    conn.execute("CREATE TABLE u(id INTEGER PRIMARY KEY, v)")
    conn.execute("INSERT INTO u VALUES (1, 0)")
    conn.commit()
    conn.close()


def _wal_size(path: str) -> int:
    try:
        return os.stat(path + "-wal").st_size
    except FileNotFoundError:
        return 0


_READER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN")
conn.execute("SELECT count(*) FROM t").fetchone()
print("reading", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
"""


@pytest.fixture
def stock_reader(db_path):
    """A stock sqlite3 process holding one read transaction open until the test ends."""
    _setup(db_path)
    proc = subprocess.Popen(
        [sys.executable, "-c", _READER, db_path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "reading"
    yield proc
    proc.stdin.close()
    assert proc.wait(60) == 0


def test_stock_reader_does_not_hold_writers_back(db_path, stock_reader):
    conn = sqlite_concurrent.connect(db_path, wal_limit=WAL_LIMIT, checkpoint_wait=0.5)
    try:
        for _ in range(6):
            conn.execute("INSERT INTO t(v) VALUES (zeroblob(?))", (BLOB // 4,))
            conn.commit()
        cp = conn._db.checkpointer
        # No restart was tried, so new transactions never waited at the gate for one.
        assert (cp.restarts, cp.failed_restarts) == (0, 0)
        assert cp.pinned_skips >= 1
        assert [pin.pid for pin in cp.pinned_by] == [stock_reader.pid]
    finally:
        conn.close()


def test_status_names_the_reader_that_pins_the_wal(db_path, stock_reader):
    conn = sqlite_concurrent.connect(db_path)
    try:
        conn.execute("INSERT INTO t(v) VALUES (1)")
        conn.commit()
        doc = status.read(db_path).to_json()
    finally:
        conn.close()
    (pin,) = doc["wal"]["pinned_by"]
    assert pin["pid"] == stock_reader.pid
    assert pin["slot"] in range(5)
    assert any(f"process {stock_reader.pid} holds WAL read lock" in n for n in doc["notes"])


_PAGE_WRITER = """
import sys
import sqlite_concurrent

conn = sqlite_concurrent.connect(sys.argv[1], lock_level="page", timeout=60)
conn.execute("UPDATE u SET v = v + 1 WHERE id = 1")
print("pinned", flush=True)
sys.stdin.readline()
conn.commit()
print("committed", flush=True)
conn.close()
"""


class _Announcing:
    """The checkpointer's connection, telling the writer to commit once a TRUNCATE checkpoint
    is under way: from its busy handler when it waits inside SQLite for readers, else as it
    starts."""

    def __init__(self, conn, go) -> None:
        self._conn, self._go = conn, go
        self._wait_ms = 0

    def set_busy_timeout(self, ms: int) -> None:
        self._wait_ms = ms
        self._conn.set_busy_timeout(ms)

    def wal_checkpoint(self, *, mode):
        if mode == apsw.SQLITE_CHECKPOINT_TRUNCATE and self._wait_ms:
            deadline = time.monotonic() + self._wait_ms / 1000

            def busy(_attempts: int) -> bool:
                self._go()  # SQLite holds the WAL write lock now and waits for a reader
                return time.monotonic() < deadline

            self._conn.set_busy_handler(busy)
        else:
            self._go()
        return self._conn.wal_checkpoint(mode=mode)

    def __getattr__(self, name):
        return getattr(self._conn, name)


def test_restart_and_merge_do_not_wait_on_each_other(db_path):
    """A page-level transaction keeps its snapshot until its merge is done, and commits while
    the WAL is due for a restart: the restart must let that merge through and then succeed."""
    _setup(db_path)
    big = sqlite_concurrent.connect(db_path, wal_limit=WAL_LIMIT, checkpoint_wait=1.0)
    # Frames not yet checkpointed: the writer's snapshot then holds a WAL read lock above 0.
    big.execute("INSERT INTO t(v) VALUES (1)")
    big.commit()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    writer = subprocess.Popen(
        [sys.executable, "-c", _PAGE_WRITER, db_path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert writer.stdout.readline().strip() == "pinned"
        told = []

        def go() -> None:
            if not told:
                told.append(True)
                writer.stdin.write("commit\n")
                writer.stdin.flush()

        cp = big._db.checkpointer
        cp.conn = _Announcing(cp.conn, go)
        big.execute("INSERT INTO t(v) VALUES (zeroblob(?))", (BLOB,))
        big.commit()  # passes the trigger: the restart runs in here
        assert told, "no restart was tried"
        assert writer.stdout.readline().strip() == "committed"
        assert (cp.restarts, cp.failed_restarts) == (1, 0)
        assert _wal_size(db_path) <= WAL_LIMIT
    finally:
        writer.stdin.close()
        assert writer.wait(60) == 0
        big.close()


def _litestream_directory(db_path: str) -> None:
    head, name = os.path.split(db_path)
    os.mkdir(os.path.join(head, f".{name}-litestream"))


def _litestream_tables(db_path: str) -> None:
    conn = apsw.Connection(db_path)
    conn.execute("CREATE TABLE _litestream_seq (id INTEGER PRIMARY KEY, seq INTEGER)")
    conn.execute("CREATE TABLE _litestream_lock (id INTEGER)")
    conn.close()


@pytest.mark.parametrize("marker", [_litestream_directory, _litestream_tables])
def test_no_checkpoint_of_ours_when_litestream_manages_the_database(db_path, marker):
    """Litestream asks applications to leave checkpoints to it (https://litestream.io/tips/).
    It keeps its state in ``.<name>-litestream`` beside the database, or wherever its
    ``meta-path`` says, and creates two tables of its own in the database."""
    _setup(db_path)
    marker(db_path)
    conn = sqlite_concurrent.connect(db_path, wal_limit=WAL_LIMIT)
    try:
        for _ in range(3):
            conn.execute("INSERT INTO t(v) VALUES (zeroblob(?))", (BLOB,))
            conn.commit()
        cp = conn._db.checkpointer
        assert (cp.restarts, cp.failed_restarts, cp.passives) == (0, 0, 0)
        assert _wal_size(db_path) > WAL_LIMIT  # left to Litestream
        assert status.read(db_path).to_json()["wal"]["litestream"] is True
    finally:
        conn.close()
