"""Group commit (architecture.md, "Journals, group commit and commit markers"): the process holding
the merge lock applies every transaction that is waiting to commit, each in its own savepoint, and
commits them at once; when it dies half-way, the owners find out from their commit markers and carry
on.

Synchronization: the test takes the merge lock itself, so writers queue behind it with their
transactions marked ready; it waits for that state in the lock database, then lets go.  Where
table-level transactions queue, their statements run before it takes the lock: a table-level
transaction takes its snapshot only once nobody holds the merge lock.
"""

from __future__ import annotations

import os
import signal
import struct
import time

import pytest
from conftest import SPAWN, integrity_ok, lock_rows, merge_lock_awaited, stock_apsw, wait_until
from workers import commit_rows, prune_markers

import sqlite_concurrent
from sqlite_concurrent import crashpoints
from sqlite_concurrent.commit import merge
from sqlite_concurrent.locking import oslock
from sqlite_concurrent.locking.lockdb import LockDB
from sqlite_concurrent.storage import journal

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("optimistic")]

ROWS = 10


@pytest.fixture
def db(db_path):
    conn = sqlite_concurrent.connect(db_path)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER NOT NULL)")
    conn.executemany("INSERT INTO t VALUES (?, 0)", [(i,) for i in range(ROWS)])
    conn.commit()
    conn.close()
    return db_path


def _ready(path: str) -> int:
    return lock_rows(path, "SELECT count(*) FROM transactions WHERE state = 'ready'")[0][0]


def _live(path: str) -> int:
    return lock_rows(path, "SELECT count(*) FROM transactions")[0][0]


def _commit_frames(path: str) -> int:
    """Commits in the WAL: frames whose header records a database size (the commit frame)."""
    with open(path + "-wal", "rb") as f:
        data = f.read()
    if len(data) < 32:
        return 0
    page_size = struct.unpack(">I", data[8:12])[0]
    salt = data[16:24]
    count, at = 0, 32
    while at + 24 <= len(data):
        if data[at + 8 : at + 16] != salt:
            break  # left over from before the last restart
        count += struct.unpack(">I", data[at + 4 : at + 8])[0] != 0
        at += 24 + page_size
    return count


def _empty_wal_kept(path: str):
    """Truncate the WAL and return a stock connection to close after counting the commits in
    it: open, it keeps the last writer's close from checkpointing and deleting the WAL."""
    conn = stock_apsw(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    return conn


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0] == "T"


def _stop_outside_guard(path: str, procs) -> None:
    """SIGSTOP ``procs`` at a moment none of them holds the lock database's write guard.

    A process can be seen ready to commit a moment before its write releases the guard, and one
    stopped inside it would block every other process's lock-database write until it resumed.
    """
    guard = oslock.ByteLock(path + "-locks", oslock.LOCKDB)
    while True:
        for proc in procs:
            os.kill(proc.pid, signal.SIGSTOP)
        for proc in procs:
            wait_until(lambda pid=proc.pid: _stopped(pid), "a process is stopped")
        if guard.try_acquire():
            guard.release()
            return
        for proc in procs:
            os.kill(proc.pid, signal.SIGCONT)


def _start(
    path, rows, group_commit=True, crash=None, table="t", level="row", delay=None, held=None
):
    """A child committing one transaction; ``held``: ``(ran, proceed)`` events, set by the
    child once its statements ran and by the test to let it commit."""
    start, queue = SPAWN.Event(), SPAWN.Queue()
    if crash:
        os.environ[crashpoints.ENV] = crash
    try:
        proc = SPAWN.Process(
            target=commit_rows,
            args=(start, queue, path, rows, group_commit, table, level, delay, *(held or ())),
        )
        proc.start()
    finally:
        os.environ.pop(crashpoints.ENV, None)
    start.set()
    # The child unpickles them after we return: they must outlive this call (and a caller
    # that drops the queue).
    _keep.extend((start, queue, *(held or ())))
    return proc, queue


_keep: list = []


def _four_held_back(db: str, group_commit: bool = True) -> None:
    """Four writers, each adding 1 to a row of its own, held back by the merge lock the test
    takes until all four wait to commit (or, not grouped, are running); then they commit."""
    merge_lock = oslock.ByteLock(db + "-locks", oslock.MERGE)
    merge_lock.acquire()
    try:
        # Row locks written at once: each transaction shows in the lock database from its
        # statement on, even when it is never offered to others.
        writers = [_start(db, [i], group_commit, delay=0) for i in range(4)]
        if group_commit:
            wait_until(lambda: _ready(db) == 4, "all four wait to commit")
        else:
            # Not offered to others, so not marked ready: each commits alone whenever it is.
            wait_until(lambda: _live(db) == 4, "all four are running")
    finally:
        merge_lock.release()
    assert [q.get(timeout=60) for _, q in writers] == ["ok"] * 4
    for proc, _ in writers:
        proc.join(30)
        assert proc.exitcode == 0


@pytest.mark.parametrize("group_commit", [True, False])
def test_waiting_transactions_commit_together(db, group_commit):
    keeper = _empty_wal_kept(db)
    _four_held_back(db, group_commit)
    conn = stock_apsw(db)
    assert conn.execute("SELECT id, v FROM t WHERE v != 0 ORDER BY id").fetchall() == [
        (i, 1) for i in range(4)
    ]
    # Commit markers only for the transactions a merger committed for another process (three
    # of the four); without grouping every process commits its own, and the schema stays the
    # application's.
    markers = merge.MARKER_TABLE
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type='table'")]
    if group_commit:
        assert conn.execute(f"SELECT count(*) FROM {markers}").fetchone() == (3,)
    else:
        assert markers not in tables
    conn.close()
    # One SQLite commit for the four (the marker table created in it), or one each.
    assert _commit_frames(db) == (1 if group_commit else 4)
    keeper.close()
    assert integrity_ok(db)


def test_a_marker_outlives_a_prune_that_began_before_its_transaction_registered(db):
    """A marker is what tells an owner whose merger died that its transaction committed; gone
    too early, the owner applies it a second time.  A prune waiting for the merge lock while
    a transaction registers and another process commits it must keep that marker, whatever
    the transaction's id (ids are reserved in blocks per process, so a later one can be
    lower); the markers of transactions that have ended go."""
    _four_held_back(db)
    merge_lock = oslock.ByteLock(db + "-locks", oslock.MERGE)
    conn = stock_apsw(db)
    markers = f"SELECT txn_id FROM {merge.MARKER_TABLE}"
    assert len(conn.execute(markers).fetchall()) == 3  # committed by a merger for the others

    # Its id reserved first, as a process reserves a block of them; the pruner's are later.
    locks = LockDB(db)
    in_doubt = locks.next_id()
    start, ready, queue = SPAWN.Event(), SPAWN.Event(), SPAWN.Queue()
    pruner = SPAWN.Process(target=prune_markers, args=(start, queue, db, ready))
    pruner.start()
    assert ready.wait(60), "the pruner never opened its connection"
    merge_lock.acquire()
    try:
        start.set()
        wait_until(lambda: merge_lock_awaited(db), "the pruner waits for the merge lock")
        # Registered now, committed for its owner by a merger holding the merge lock, and the
        # owner has not heard yet: in doubt until it ends in the lock database.
        locks.grants.register(in_doubt, "row", time.time())
        conn.execute("BEGIN IMMEDIATE")
        merge.record_marker(conn, in_doubt)
        conn.execute("COMMIT")
    finally:
        merge_lock.release()
    assert queue.get(timeout=60) == "pruned"
    pruner.join(30)
    assert pruner.exitcode == 0
    assert conn.execute(markers).fetchall() == [(in_doubt,)]
    assert merge.is_committed(conn, in_doubt)
    locks.end(in_doubt)
    locks.close()
    conn.close()


@pytest.mark.parametrize("level", ["row", "table"])
@pytest.mark.parametrize(
    "point",
    [
        "merge.locked",
        "merge.before_apply",
        "merge.mid_apply",
        "merge.after_apply",
        "merge.after_commit",
    ],
)
def test_merger_killed_while_merging_others(db, point, level):
    """The victim merges a group holding three other processes' transactions and dies at
    ``point``.  Each of the others then commits exactly once, none in part, and nothing of the
    victim is left.  Each process writes two rows of a table of its own, so at table level too
    all of them can be waiting to commit at once."""
    tables = [f"w{k}" for k in range(5)]  # three others, the victim, a newcomer
    setup = sqlite_concurrent.connect(db)
    for name in tables:
        setup.execute(f"CREATE TABLE {name}(id INTEGER PRIMARY KEY, v INTEGER NOT NULL)")
        setup.execute(f"INSERT INTO {name} VALUES (0, 0), (1, 0)")
    setup.commit()
    setup.close()
    keeper = _empty_wal_kept(db)
    merge_lock = oslock.ByteLock(db + "-locks", oslock.MERGE)
    # Their statements run first: a table-level transaction takes its snapshot only once no
    # one holds the merge lock (a direct transaction may be writing under it).
    held = [(SPAWN.Event(), SPAWN.Event()) for _ in range(4)]
    others = [_start(db, [0, 1], table=tables[k], level=level, held=held[k]) for k in range(3)]
    victim, _ = _start(db, [0, 1], crash=f"{point}@1", table=tables[3], level=level, held=held[3])
    for ran, _ in held:
        assert ran.wait(60), "a transaction never ran its statements"
    merge_lock.acquire()
    released = False
    try:
        for _, proceed in held[:3]:
            proceed.set()
        wait_until(lambda: _ready(db) == 3, "the others wait to commit")
        # Stopped processes cannot take the lock: the victim will be the one merging.
        _stop_outside_guard(db, [proc for proc, _ in others])
        held[3][1].set()
        wait_until(lambda: _ready(db) == 4, "the victim waits to commit too")
        merge_lock.release()
        released = True
        victim.join(60)
        assert victim.exitcode == -signal.SIGKILL, f"the victim did not die at {point}"
        # A newcomer merges next, the others still stopped: it finds their transactions
        # ready, committed by the victim or not, and must not apply any of them twice.
        newcomer, newcomer_result = _start(db, [0, 1], table=tables[4], level=level)
        assert newcomer_result.get(timeout=60) == "ok"
        newcomer.join(30)
        assert newcomer.exitcode == 0
    finally:
        if not released:
            merge_lock.release()
        for proc, _ in others:
            os.kill(proc.pid, signal.SIGCONT)
    assert [q.get(timeout=60) for _, q in others] == ["ok"] * 3
    for proc, _ in others:
        proc.join(30)
        assert proc.exitcode == 0

    conn = stock_apsw(db)
    values = {
        name: [v for (v,) in conn.execute(f"SELECT v FROM {name} ORDER BY id")] for name in tables
    }
    conn.close()
    for name in tables[:3]:
        assert values[name] == [1, 1], "another's transaction was lost or doubled"
    assert values[tables[4]] == [1, 1]
    # Its own transaction is all or nothing: committed by its group if it died after the
    # commit, else perhaps by a later merger (its record was ready, and being unacknowledged it
    # may commit or not), but never in part.
    assert values[tables[3]] in ([0, 0], [1, 1])
    if point == "merge.after_commit":
        assert values[tables[3]] == [1, 1]
    # The victim's group committed everything ready when it died after the commit; else the
    # newcomer's group did.  Either way once, and the newcomer's own commit is the only other.
    assert _commit_frames(db) == (2 if point == "merge.after_commit" else 1)
    keeper.close()

    # The next process to open the database cleans up after the victim.
    sqlite_concurrent.connect(db).close()
    assert not os.path.exists(journal.path_for(db, victim.pid))
    mine = (victim.pid,)
    assert lock_rows(db, "SELECT count(*) FROM transactions WHERE pid = ?", mine) == [(0,)]
    assert lock_rows(db, "SELECT count(*) FROM locks") == [(0,)]
    assert integrity_ok(db)
