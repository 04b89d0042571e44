"""A stock sqlite3 connection shares the database with our writers."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import SPAWN, integrity_ok, stock, stock_apsw
from workers import disjoint_updates

import sqlite_concurrent

WRITERS = 4
ROWS = 10
TXNS = 150

# In another process: the stdlib is refused on a file this one has opened with sqlite_concurrent.
_SETUP = """
import sys, sqlite_concurrent
conn = sqlite_concurrent.connect(sys.argv[1])
conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER NOT NULL)")
conn.execute("CREATE TABLE stock_log(id INTEGER PRIMARY KEY, n INTEGER)")
conn.executemany("INSERT INTO t VALUES (?, 0)", [(i,) for i in range(int(sys.argv[2]))])
conn.commit()
conn.close()
"""


@pytest.mark.timeout(180)
def test_stock_reader_and_writer_alongside_our_writers(db_path):
    subprocess.run(
        [sys.executable, "-c", _SETUP, db_path, str(WRITERS * ROWS)], check=True, timeout=60
    )

    # Held open for the whole test: SQLite itself then never deletes -wal, so an inode change
    # would mean our code deleted or replaced it.
    keeper = stock(db_path)
    keeper.execute("SELECT count(*) FROM sqlite_schema").fetchall()
    wal_inode = os.stat(db_path + "-wal").st_ino
    directory = os.path.dirname(db_path)

    start, queue = SPAWN.Event(), SPAWN.Queue()
    procs = [
        SPAWN.Process(target=disjoint_updates, args=(start, queue, db_path, w, ROWS, TXNS, 0.001))
        for w in range(WRITERS)
    ]
    for p in procs:
        p.start()
    start.set()
    writer = stock(db_path)
    stock_commits = 0
    seen_totals = []
    journal_seen = False
    while queue.qsize() < WRITERS and any(p.is_alive() for p in procs):
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("INSERT INTO stock_log(n) VALUES (?)", (stock_commits,))
        writer.execute("COMMIT")
        stock_commits += 1
        seen_totals.append(writer.execute("SELECT sum(v) FROM t").fetchone()[0])
        # The main database's rollback journal (the lock database, created by the first of
        # our writers, may briefly have one of its own).
        journal_seen |= os.path.basename(db_path) + "-journal" in os.listdir(directory)
    results = [queue.get(timeout=170) for _ in procs]
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    assert all(r[0] != "error" for r in results), results

    assert stock_commits > 0
    assert seen_totals == sorted(seen_totals), "a stock reader saw the total go backwards"
    assert writer.execute("SELECT sum(v) FROM t").fetchone()[0] == WRITERS * TXNS
    assert writer.execute("SELECT count(*), max(n) FROM stock_log").fetchone() == (
        stock_commits,
        stock_commits - 1,
    )
    assert writer.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert not journal_seen
    assert not [n for n in os.listdir(directory) if n.endswith("-journal")]
    assert os.stat(db_path + "-wal").st_ino == wal_inode
    writer.close()
    keeper.close()
    assert integrity_ok(db_path)


@pytest.mark.timeout(60)
def test_stock_writes_are_seen_by_our_next_transaction(db_path):
    conn = sqlite_concurrent.connect(db_path)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER NOT NULL)")
    conn.execute("INSERT INTO t VALUES (1, 0)")
    conn.commit()
    other = stock_apsw(db_path)
    for i in range(1, 50):
        other.execute("UPDATE t SET v=? WHERE id=1", (i,))
        conn.execute("BEGIN")
        assert conn.execute("SELECT v FROM t WHERE id=1").fetchone() == (i,)
        conn.execute("UPDATE t SET v=v+1000 WHERE id=1")
        conn.commit()
        assert other.execute("SELECT v FROM t WHERE id=1").fetchone() == (i + 1000,)
    other.close()
    conn.close()
