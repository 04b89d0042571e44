"""Regression tests for the hard facts in architecture.md, "Snapshots, and the locks a close
drops" and "The overlay VFS".

Each test builds the situation in which the fact bites and checks that a transaction still sees
exactly its snapshot.  They reach into a connection's internals (the pinned snapshot, the
snapshot connection) on purpose: the facts are about those internals.
"""

from __future__ import annotations

import ast
import os
import re
import sqlite3
from pathlib import Path

import apsw
import pytest
from conftest import SPAWN, stock_apsw

import sqlite_concurrent
from sqlite_concurrent.storage import snapshot as snapshot_mod
from sqlite_concurrent.storage.overlay import Overlay, vfs

# Tests of the optimistic machinery: transactions overlap in one thread or across processes.
pytestmark = pytest.mark.usefixtures("optimistic")

SRC = Path(sqlite_concurrent.__file__).parent


def _counter_db(path: str, rows: int = 1) -> None:
    conn = stock_apsw(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE c(id INTEGER PRIMARY KEY, v INTEGER NOT NULL, pad TEXT)")
    conn.executemany("INSERT INTO c VALUES (?, 0, ?)", [(i, "x" * 300) for i in range(rows)])
    conn.close()


def _increment_until(path, started, stop):
    conn = sqlite3.connect(path, timeout=60, isolation_level=None)
    started.set()
    while not stop.is_set():
        conn.execute("UPDATE c SET v = v + 1 WHERE id = 0")
    conn.close()


@pytest.mark.timeout(120)
def test_snapshot_race_transaction_sees_exactly_the_pinned_reader_view(db_path):
    """Fact (race): a header read after BEGIN while others commit picked the wrong snapshot.

    A stock process commits as fast as it can while we pin 300 snapshots; the value our
    transaction reads through the overlay must be the one the pinned stock reader sees.
    """
    _counter_db(db_path)
    conn = sqlite_concurrent.connect(db_path)
    started, stop = SPAWN.Event(), SPAWN.Event()
    writer = SPAWN.Process(target=_increment_until, args=(db_path, started, stop))
    writer.start()
    try:
        assert started.wait(30)
        distinct = set()
        for _ in range(300):
            conn.execute("BEGIN")
            (ours,) = conn.execute("SELECT v FROM c WHERE id = 0").fetchone()
            (pinned,) = conn._snapshot_conn.execute("SELECT v FROM c WHERE id = 0").fetchone()
            assert ours == pinned
            distinct.add(ours)
            conn.rollback()
    finally:
        stop.set()
        writer.join(30)
    conn.close()
    assert len(distinct) > 10, "the writer did not commit concurrently: the test proved nothing"


@pytest.mark.timeout(60)
def test_fully_checkpointed_wal_that_restarts_under_the_snapshot(db_path):
    """Fact: with every frame backfilled the reader holds read-mark 0 and the WAL may restart
    and be overwritten under it; pages must then come from the database file."""
    _counter_db(db_path, rows=50)
    conn = sqlite_concurrent.connect(db_path)  # first open writes the marker table
    other = stock_apsw(db_path)
    other.execute("UPDATE c SET v = 1")
    busy, log, done = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert (busy, log == done, log > 0) == (0, True, True)

    conn.execute("BEGIN")
    hdr = conn._txns.txn.snapshot.header
    assert hdr.max_frame > 0 and hdr.backfilled == hdr.max_frame
    # The stock writer restarts the WAL (new salt) and overwrites its first frames.
    for i in range(2, 30):
        other.execute("UPDATE c SET v = ?", (i,))
    # Closing a descriptor on -shm would drop this process's locks on it (the very fact under
    # test), so the one opened here is closed only at the end.
    fd = os.open(db_path + "-shm", os.O_RDONLY)
    now = snapshot_mod.read_wal_header(fd)
    assert now is not None and now.salt != hdr.salt, "the WAL did not restart"
    rows = conn.execute("SELECT DISTINCT v FROM c").fetchall()
    assert rows == [(1,)]
    conn.execute("UPDATE c SET pad = 'mine' WHERE id = 3")
    with pytest.raises(sqlite_concurrent.ConflictError) as info:
        conn.commit()
    assert (info.value.table, info.value.key, info.value.kind) == ("c", (3,), "data")
    conn.close()
    other.close()
    os.close(fd)


def test_a_wal_restarted_under_the_snapshot_holds_exactly_what_changed_since(db_path):
    """Fact: the snapshot holds read-mark 0, so nothing is backfilled while it is pinned and the
    WAL restarts at most once: every frame the restarted WAL holds came after it.  A page-level
    transaction that read only other pages commits; one that read a changed page conflicts."""
    conn = stock_apsw(db_path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE a(id INTEGER PRIMARY KEY, v)")
    conn.execute("CREATE TABLE b(id INTEGER PRIMARY KEY, v)")
    conn.execute("INSERT INTO a VALUES (1, 0)")
    conn.execute("INSERT INTO b VALUES (1, 0)")
    conn.close()
    readers = [sqlite_concurrent.connect(db_path, lock_level="page") for _ in range(2)]
    other = stock_apsw(db_path)
    other.execute("UPDATE b SET v = 5")  # frames in the WAL, all of them then backfilled
    busy, log, done = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert (busy, log == done, log > 0) == (0, True, True)
    for reader, table, v in zip(readers, "ab", (0, 5), strict=True):
        reader.execute("BEGIN")
        assert reader.execute(f"SELECT v FROM {table}").fetchall() == [(v,)]
        hdr = reader._txns.txn.snapshot.header
        assert hdr.backfilled == hdr.max_frame
    other.execute("UPDATE a SET v = 1")
    fd = os.open(db_path + "-shm", os.O_RDONLY)  # closed only at the end (the fact above)
    now = snapshot_mod.read_wal_header(fd)
    assert now is not None and now.salt != hdr.salt, "the WAL did not restart"
    (a_root,) = other.execute("SELECT rootpage FROM sqlite_schema WHERE name = 'a'").fetchone()
    (b_root,) = other.execute("SELECT rootpage FROM sqlite_schema WHERE name = 'b'").fetchone()
    changed = snapshot_mod.pages_changed_since(db_path, hdr)
    assert changed is not None and a_root in changed and b_root not in changed
    for reader in readers:
        reader.execute("UPDATE b SET v = v + 1 WHERE id = 1")
    with pytest.raises(sqlite_concurrent.ConflictError) as info:
        readers[0].commit()  # it read a, which changed
    assert (info.value.kind, info.value.table) == ("page", "a")
    readers[1].commit()  # it read only b: nothing it read changed
    for reader in readers:
        reader.close()
    assert other.execute("SELECT v FROM a UNION ALL SELECT v FROM b").fetchall() == [(1,), (6,)]
    other.close()
    os.close(fd)


@pytest.mark.timeout(60)
def test_pinned_snapshot_blocks_checkpoints_past_it(db_path):
    _counter_db(db_path, rows=50)
    conn = sqlite_concurrent.connect(db_path)
    conn.execute("BEGIN")
    conn.execute("SELECT v FROM c WHERE id = 0").fetchall()
    other = stock_apsw(db_path)
    other.set_busy_timeout(0)
    for i in range(1, 20):
        other.execute("UPDATE c SET v = ?", (i,))
    busy, log, done = other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    assert busy == 1 and done < log
    assert conn.execute("SELECT DISTINCT v FROM c").fetchall() == [(0,)]
    conn.rollback()
    conn.close()
    other.close()


def _checkpoint_truncate(path, queue):
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA busy_timeout=0")
    conn.execute("UPDATE c SET v = 99")
    queue.put(conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone())
    conn.close()


@pytest.mark.timeout(60)
def test_descriptors_stay_open_so_the_snapshot_read_lock_survives(db_path):
    """Fact (lost locks): closing any descriptor on -shm drops the process's POSIX locks,
    releasing the pinned reader's read mark.  Open and close whole connections (and so every
    descriptor they use) while a snapshot is pinned; another process must still be unable to
    checkpoint past it."""
    _counter_db(db_path, rows=50)
    conn = sqlite_concurrent.connect(db_path)
    conn.execute("BEGIN")
    assert conn.execute("SELECT v FROM c WHERE id = 0").fetchone() == (0,)
    for _ in range(5):
        extra = sqlite_concurrent.connect(db_path)
        extra.execute("UPDATE c SET pad = 'other' WHERE id = 49")
        extra.commit()
        extra.close()
    queue = SPAWN.Queue()
    proc = SPAWN.Process(target=_checkpoint_truncate, args=(db_path, queue))
    proc.start()
    busy, _log, _done = queue.get(timeout=30)
    proc.join(30)
    assert busy == 1, "a TRUNCATE checkpoint ran past our pinned snapshot: its lock was lost"
    assert conn.execute("SELECT DISTINCT v FROM c").fetchall() == [(0,)]
    conn.rollback()
    conn.close()


def test_library_never_maps_or_closes_database_descriptors():
    """The code-level half of the lost-locks fact: no mmap; the modules that hold descriptors
    on the database, -wal, -shm or -locks close them only in ``forget`` (and a forked child's
    inherited copies, which hold no lock of the child's), and only the holding module, which
    orders the process's last close, calls ``forget``."""
    for module in SRC.rglob("*.py"):
        text = module.read_text()
        assert not re.search(r"^\s*(import mmap|from mmap )", text, re.M), module.name
    # oslock's _open_present closes a descriptor it has just opened, before handing it out,
    # when the file was deleted under it: the process holds no lock there.
    # plain_open's guard closes its descriptor once SQLite's connections to the file have closed,
    # in a forked child (the parent's copy), or at once when the name is now another file's.
    allowed = {
        "storage/snapshot.py": {"_close"},
        "locking/oslock.py": {"forget", "_forked", "_open_present"},
        "process/plain_open.py": {"__init__", "close", "_forked"},
    }
    for name, functions in allowed.items():
        tree = ast.parse((SRC / name).read_text())
        for function in ast.walk(tree):
            if isinstance(function, ast.FunctionDef) and function.name not in functions:
                for node in ast.walk(function):
                    assert not (
                        isinstance(node, ast.Attribute)
                        and node.attr == "close"
                        and isinstance(node.value, ast.Name)
                        and node.value.id == "os"
                    ), f"os.close in {name}:{function.name}"
    snapshot_text = (SRC / "storage/snapshot.py").read_text()
    assert snapshot_text.count("._close()") == 1  # from forget
    for module in SRC.rglob("*.py"):
        if module.name not in ("holding.py", "snapshot.py", "oslock.py"):
            text = module.read_text()
            assert "WalFiles.forget" not in text and "oslock.forget" not in text, module.name


@pytest.mark.timeout(60)
def test_overlay_hides_the_real_wal_and_never_deletes_it(db_path):
    """Fact (data loss): SQLite joins (and later deletes) any -wal it can see."""
    _counter_db(db_path, rows=20)
    keeper = stock_apsw(db_path)
    keeper.execute("BEGIN")
    keeper.execute("SELECT count(*) FROM c").fetchall()  # keeps frames un-checkpointed
    other = stock_apsw(db_path)
    other.execute("UPDATE c SET v = 7")
    wal = os.stat(db_path + "-wal")

    overlay_vfs = vfs()
    for suffix in ("-wal", "-shm"):
        assert os.path.exists(db_path + suffix)
        assert overlay_vfs.xAccess(db_path + suffix, 0) is False
        overlay_vfs.xDelete(db_path + suffix, False)
        assert os.path.exists(db_path + suffix)

    conn = sqlite_concurrent.connect(db_path)
    conn.execute("BEGIN")
    assert conn._txns.txn.conn.execute("PRAGMA journal_mode").fetchone() == ("memory",)
    assert conn.execute("SELECT DISTINCT v FROM c").fetchall() == [(7,)]
    conn.execute("UPDATE c SET v = 8 WHERE id = 0")
    assert not os.path.exists(db_path + "-journal")
    conn.commit()
    assert not os.path.exists(db_path + "-journal")
    conn.close()
    after = os.stat(db_path + "-wal")
    assert after.st_ino == wal.st_ino and after.st_size >= wal.st_size
    keeper.execute("COMMIT")
    fresh = stock_apsw(db_path)
    assert fresh.execute("SELECT v, count(*) FROM c GROUP BY v ORDER BY v").fetchall() == [
        (7, 19),
        (8, 1),
    ]
    assert fresh.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    for c in (fresh, other, keeper):
        c.close()


@pytest.mark.timeout(60)
def test_page_one_is_patched_with_a_fresh_counter_per_transaction(db_path):
    _counter_db(db_path, rows=100)
    conn = sqlite_concurrent.connect(db_path)
    reader, files = conn._snapshot_conn, conn._db.wal_files
    first = Overlay(snapshot_mod.Snapshot(files, reader))
    page1 = first.page(1)
    assert page1[18] == 1 and page1[19] == 1  # legacy (rollback) format: 2 fails to open
    assert page1[24:28] == page1[92:96]  # counter == version-valid-for: size is trusted
    assert int.from_bytes(page1[28:32], "big") == first.snapshot.page_count
    first.snapshot.release()
    second = Overlay(snapshot_mod.Snapshot(files, reader))
    assert second.page(1)[24:28] != page1[24:28]
    second.snapshot.release()
    conn.close()


@pytest.mark.timeout(60)
def test_reused_transaction_connection_never_serves_stale_pages(db_path):
    """Fact: reusing the change counter let SQLite serve pages from a stale cache."""
    _counter_db(db_path, rows=200)
    conn = sqlite_concurrent.connect(db_path)
    other = stock_apsw(db_path)
    for i in range(1, 60):
        other.execute("UPDATE c SET v = ? WHERE id % 7 = ?", (i, i % 7))
        conn.execute("BEGIN")
        mine = conn.execute("SELECT id, v FROM c ORDER BY id").fetchall()
        conn.rollback()
        assert mine == other.execute("SELECT id, v FROM c ORDER BY id").fetchall()
    conn.close()
    other.close()


@pytest.mark.timeout(60)
def test_wal_descriptors_stay_valid_across_reconnects_restarts_and_new_files(db_path):
    """Snapshots read the database, -wal and -shm through descriptors opened once per process
    and file, not checked per snapshot: while a connection of ours is open, the process's anchor
    connection keeps SQLite from deleting -wal/-shm when stock connections come and go, a
    restarted (truncated) WAL is the same file, our last close lets go of them (SQLite then
    deletes -wal/-shm, as after the stdlib's last close), and a new file at the same path gets
    descriptors of its own."""
    _counter_db(db_path, rows=100)
    conn = sqlite_concurrent.connect(db_path)
    with conn:
        conn.execute("UPDATE c SET v = 1 WHERE id = 1")
    files = snapshot_mod.WalFiles.for_path(os.path.abspath(db_path))
    other = stock_apsw(db_path)
    other.execute("SELECT count(*) FROM c").fetchall()  # opens the WAL
    other.close()
    assert os.path.exists(db_path + "-wal") and os.path.exists(db_path + "-shm")
    assert os.fstat(files.wal).st_nlink == 1 and os.fstat(files.shm).st_nlink == 1
    other = stock_apsw(db_path)
    other.execute("SELECT count(*) FROM c").fetchall()
    assert other.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_TRUNCATE) == (0, 0)
    assert os.path.getsize(db_path + "-wal") == 0
    for i in range(2, 40):  # frames only the restarted WAL (and its index) holds
        other.execute("UPDATE c SET v = ? WHERE id = ?", (i, i))
    with conn:
        conn.execute("BEGIN")  # reads then come from a snapshot, not the stock reader
        got = conn.execute("SELECT id, v FROM c WHERE id < 40 ORDER BY id").fetchall()
        conn.execute("UPDATE c SET v = -1 WHERE id = 0")
    assert got == [(0, 0), *[(i, i) for i in range(1, 40)]]
    assert other.execute("SELECT v FROM c WHERE id = 0").fetchone() == (-1,)
    assert other.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert snapshot_mod.WalFiles.for_path(os.path.abspath(db_path)) is files
    assert files.retired == []
    other.close()
    conn.close()
    assert not os.path.exists(db_path + "-wal") and not os.path.exists(db_path + "-shm")
    assert files.wal == files.shm == files.db == -1  # closed, after every SQLite connection
    # Deleted and created again at the same path (test suites do this): another file, read
    # through descriptors of its own, here from the database file itself after a checkpoint.
    os.unlink(db_path)
    _counter_db(db_path, rows=100)
    fresh = stock_apsw(db_path)
    fresh.execute("UPDATE c SET v = 5 WHERE id = 5")
    assert fresh.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_TRUNCATE) == (0, 0)
    conn = sqlite_concurrent.connect(db_path)
    assert conn._db.wal_files is not files  # the inode number may well be the same again
    with conn:
        conn.execute("BEGIN")
        assert conn.execute("SELECT sum(v), count(*) FROM c").fetchone() == (5, 100)
        conn.execute("UPDATE c SET v = 6 WHERE id = 6")
    assert fresh.execute("SELECT sum(v) FROM c").fetchone() == (11,)
    conn.close()
    fresh.close()


@pytest.mark.timeout(60)
def test_schema_cookie_is_the_snapshots_from_the_wal_or_the_database_file(db_path):
    # A transaction's schema cookie comes from its snapshot's page 1 (patched, read once): the
    # snapshot's own whether page 1's latest version is a WAL frame or, after a checkpoint,
    # the database file, and not a later one.
    _counter_db(db_path, rows=100)
    conn = sqlite_concurrent.connect(db_path)
    other = stock_apsw(db_path)
    for checkpoint in (False, True):
        other.execute(f"CREATE TABLE t{int(checkpoint)}(x)")  # a new cookie, on page 1
        if checkpoint:
            log, done = other.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_FULL)
            assert log == done > 0
        (cookie,) = other.execute("PRAGMA schema_version").fetchone()
        conn.execute("BEGIN")
        conn.execute("SELECT count(*) FROM c").fetchall()  # pins the snapshot
        other.execute(f"CREATE TABLE later{int(checkpoint)}(x)")
        txn = conn._txns.txn
        assert bool(txn.snapshot.frame_for(1)) != checkpoint
        assert txn.schema_version == cookie
        assert other.execute("PRAGMA schema_version").fetchone() == (cookie + 1,)
        conn.rollback()
    conn.close()
    other.close()
