"""Restart checkpoints do not hold writers back for a reader they cannot outwait, and
``status`` names the reader that pins the WAL (DESIGN section 12)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest

import sqlite_concurrent
from sqlite_concurrent import status

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
        cp = conn._checkpointer
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
