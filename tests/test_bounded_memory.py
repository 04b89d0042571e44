"""A transaction that writes more pages than SQLite's cache and the overlay's memory budget
hold: the overlay keeps its budget, the rest goes to the process's journal, and reads, savepoint
rollbacks, commit and rollback all behave."""

from __future__ import annotations

import os

import pytest
from conftest import integrity_ok, stock_apsw

import sqlite_concurrent
from sqlite_concurrent.storage import journal, overlay

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("optimistic")]

ROWS = 3000


@pytest.fixture
def db(db_path):
    conn = sqlite_concurrent.connect(db_path)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, b TEXT NOT NULL)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"{i:06d}" * 80) for i in range(ROWS)])
    conn.commit()
    conn.close()
    return db_path


@pytest.fixture
def small_budget(monkeypatch):
    monkeypatch.setattr(overlay, "MEMORY_BUDGET", 16 * 4096)


@pytest.mark.parametrize("end", ["commit", "rollback"])
def test_big_transaction_spills_overlay_pages_to_the_journal(db, small_budget, end):
    conn = sqlite_concurrent.connect(db)
    conn.execute("PRAGMA cache_size = 10")  # SQLite's own cache spills dirty pages early
    conn.execute("BEGIN")
    conn.execute("UPDATE t SET b = lower(b) || 'x'")
    ov = conn._db.slot.overlay
    assert len(ov.pages) <= 16
    assert len(ov.spilled) > 200
    path = journal.path_for(db, os.getpid())
    assert os.path.getsize(path) > len(ov.spilled) * 4096
    # Spilled pages read back intact: through a scan, and after a savepoint's rollback.
    assert conn.execute("SELECT count(*) FROM t WHERE b LIKE '%x'").fetchone() == (ROWS,)
    conn.execute("SAVEPOINT s")
    conn.execute("UPDATE t SET b = 'gone'")
    conn.execute("ROLLBACK TO s")
    conn.execute("RELEASE s")
    assert conn.execute("SELECT count(*) FROM t WHERE b LIKE '%x'").fetchone() == (ROWS,)
    getattr(conn, end)()
    assert os.path.getsize(path) == journal.HEADER_SIZE  # nothing live: back to the header
    conn.close()
    assert not os.path.exists(path)
    check = stock_apsw(db)
    expected = ROWS if end == "commit" else 0
    assert check.execute("SELECT count(*) FROM t WHERE b LIKE '%x'").fetchone() == (expected,)
    assert check.execute("SELECT b FROM t WHERE id = 7").fetchone() == (
        ("000007" * 80 + "x") if end == "commit" else "000007" * 80,
    )
    check.close()
    assert integrity_ok(db)


def test_rollback_journal_of_the_transaction_is_never_at_the_real_path(db):
    conn = sqlite_concurrent.connect(db)
    conn.execute("PRAGMA cache_size = 10")
    conn.execute("BEGIN")
    conn.execute("UPDATE t SET b = 'y'")
    assert not os.path.exists(db + "-journal")
    conn.rollback()
    assert conn.execute("SELECT count(*) FROM t WHERE b = 'y'").fetchone() == (0,)
    conn.close()
