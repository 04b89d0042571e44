"""A database file as one connection shares it with other processes.

Opening one gives the connection its stock SQLite connections on the file (the merger, the
reader, the snapshot pinner) and the machinery every write transaction uses: the process's
holding of the file, the lock database, the journal, the overlay slot, the merge lock and the
checkpointer.  What the application sees of a connection (its statements, transactions and
callbacks) is the DB-API layer's; this is what lies under it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

import apsw

from .. import filenames
from ..commit import merge
from ..commit.checkpoint import Checkpointer
from ..errors import OperationalError
from ..locking import lockdb_health, oslock, publisher, waits
from ..locking.lockdb import LockDB
from ..process import foreign, holding
from ..storage import journal, snapshot
from ..storage.overlay import vfs
from . import recovery

# URI filenames in ATTACH work as in the stdlib's SQLite (built with SQLITE_USE_URI).
OPEN_FLAGS = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE | apsw.SQLITE_OPEN_URI
_MARKER_PRUNE_EVERY = 256


class SharedDatabase:
    """The file at ``path``, opened by :meth:`open` for one connection (``user``)."""

    def __init__(
        self,
        path: str,
        opened: holding.Handles,
        *,
        timeout: float,
        wal_limit: int,
        checkpoint_wait: float,
        group_commit: bool | None,
    ) -> None:
        """``opened``: the connection's SQLite connections, which this adds its own to."""
        self.path = path
        self.opened = opened
        self.timeout = timeout
        self._wal_limit = wal_limit
        self._checkpoint_wait = checkpoint_wait
        self._group_commit = group_commit
        self.merger_fsyncs: bool | None = None  # synchronous FULL or EXTRA on the merger
        self.merges = 0
        self.holding: holding.Holding | None = None  # until it opens, and once it is left

    def stock(self, flags: int = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE) -> Any:
        conn = apsw.Connection(*filenames.for_sqlite(self.path, flags))
        self.opened.append(conn)
        conn.set_busy_timeout(int(self.timeout * 1000))
        return conn

    def open(self, user: object, our_pids: Callable[[], frozenset[int]]) -> None:
        """Open the file for ``user``, a connection of this process; ``our_pids`` says which
        processes hold it (held weakly by the caller: see ``process/exiting.py``).

        :raises OperationalError: the file cannot be opened or switched to WAL mode.
        """
        path = self.path
        if os.path.isdir(path):
            error = OperationalError(f"unable to open database file: {path} is a directory")
            error.sqlite_errorcode = apsw.SQLITE_CANTOPEN  # type: ignore[attr-defined]
            error.sqlite_errorname = "SQLITE_CANTOPEN_ISDIR"  # type: ignore[attr-defined]
            raise error
        # Counted before anything opens the file: descriptors of a last close still under
        # way must close before this connection takes locks on it (architecture.md,
        # "Snapshots, and the locks a close drops").  Descriptors another library has on it
        # are looked for then, while no thread of ours has any.
        self.holding = holding.acquire(path, first=_first_open)
        self.holding.track(self.opened)
        self.holding.connections.add(user)
        self.merger = self.stock(OPEN_FLAGS)
        # Opened, so SQLite has said why if the file cannot be; before anything reads it (and
        # opens -wal): a last closer in another process may be deleting what is beside it
        # (leftovers.py).
        oslock.present(path + "-locks")
        # Wait for the WAL write lock in the kernel (SQLite's blocking-lock support, compiled
        # into APSW's SQLite) rather than in the sleeping busy handler, which lets a stock
        # writer in a loop starve our merges (architecture.md, "Locks and waiting").
        # Measured: a stock writer committing in a tight loop slowed 4 of our writers' 600
        # commits from 6 s to 113 s without it.
        self.merger.setlk_timeout(int(self.timeout * 1000), 0)
        self.merge_lock = merge.merge_lock(path + "-locks")
        self._ensure_wal()
        first_txn_id = merge.last_marker(self.merger) + 1
        self.page_size = int(_value(self.merger, "PRAGMA page_size"))
        st = os.stat(path)
        self.reader = self.stock()
        self.snapshot_conn = self.stock()
        # Creates -wal/-shm if absent; they then live as long as this connection does.
        self.snapshot_conn.execute("SELECT 1 FROM sqlite_schema LIMIT 1").fetchall()
        # Per file, not per path: a database deleted and created again at the same path is
        # another.
        self.wal_files: snapshot.WalFiles = self.holding.files((st.st_dev, st.st_ino))
        self.checkpointer = Checkpointer(
            self.merger,
            path,
            merge_lock=self.merge_lock,
            our_pids=our_pids,
            wal_limit=self._wal_limit,
            checkpoint_wait=self._checkpoint_wait,
            busy_timeout_ms=int(self.timeout * 1000),
            wal_files=self.wal_files,
        )
        self.lockdb = LockDB(path, first_txn_id=first_txn_id)
        self.opened.append(self.lockdb.conn)
        reaped = self.lockdb.register_holder()
        self.publisher: publisher.Publisher = self.holding.publisher
        self.slot_id, self.slot = vfs().new_slot()
        self.journal = journal.Journal.for_db(path, self.lockdb.start_time)
        recovery.on_open(path, reaped)

    def _ensure_wal(self) -> None:
        # Only a new database needs the merge lock here: an exclusive transaction may hold it
        # for as long as its application thinks.
        if _value(self.merger, "PRAGMA journal_mode") == "wal":
            return
        with self.merge_lock:
            mode = _value(self.merger, "PRAGMA journal_mode")
            if mode != "wal":
                # Needs a moment without other connections: SQLite refuses while others read.
                mode = _value(self.merger, "PRAGMA journal_mode=WAL")
                if mode != "wal":
                    raise OperationalError(
                        f"could not switch {self.path} to WAL mode (it is in {mode!r} mode)"
                    )

    def abandon(self) -> None:
        """Let go of what a failed :meth:`open` opened."""
        if self.holding is None:
            holding.close_all(self.opened)
            return
        # Each is set once opened, in this order.
        if hasattr(self, "slot_id"):
            vfs().drop_slot(self.slot_id)
        if hasattr(self, "journal"):
            self.journal.release()
        self.holding.leave(self.opened, getattr(self, "lockdb", None))
        self.holding = None

    def leave(self) -> None:
        """Let go of the file, as the last step of the connection's ``close``."""
        assert self.holding is not None
        try:
            # What an earlier end could not release (a full disk), if it can now.
            with contextlib.suppress(apsw.Error):
                waits.wake(self.lockdb, self.lockdb.end_unended())
            vfs().drop_slot(self.slot_id)
            self.journal.release()
        finally:
            self.holding.leave(self.opened, self.lockdb)
            self.holding = None

    def holder_pids(self) -> frozenset[int]:
        """Processes with sqlite_concurrent connections on the database: their WAL read locks
        are transactions the checkpointer can wait out."""
        rows = self.lockdb.conn.execute("SELECT pid FROM holders").fetchall()
        return frozenset(pid for (pid,) in rows if isinstance(pid, int)) | {os.getpid()}

    def groups(self) -> bool:
        """Whether commits are grouped (``connect(group_commit=...)``)."""
        if self._group_commit is not None:
            return self._group_commit
        if self.merger_fsyncs is None:  # known until a connection pragma runs again
            self.merger_fsyncs = int(_value(self.merger, "PRAGMA synchronous")) >= 2
        return self.merger_fsyncs

    def after_merge(self) -> None:
        """After a commit, outside the merge lock: checkpoint if due, prune old markers."""
        self.checkpointer.after_merge(self.page_size)
        self.merges += 1
        if self.merges % _MARKER_PRUNE_EVERY == 0:
            merge.prune_markers(self.merger, self.merge_lock, self.lockdb.conn)


def let_go(
    holding_: holding.Holding,
    journal_: journal.Journal,
    slot_id: int,
    lockdb: LockDB,
    at_exit: bool,
) -> None:
    """What a connection collected unclosed held (``process/exiting.py``), let go of as its
    ``close`` would: before exit only if it had no transaction open; at exit its transactions
    are the only ones of the process left, every open connection having closed.  Not a method:
    what is let go of must not keep the SQLite connections alive."""
    if holding_.inherited:
        return
    vfs().drop_slot(slot_id)
    try:
        if at_exit:
            lockdb.forget_own_transactions()
        else:
            with contextlib.suppress(apsw.Error):  # what an earlier end could not release
                waits.wake(lockdb, lockdb.end_unended())
        journal_.release()
    finally:
        holding_.leave(holding.Handles(), lockdb)


def _first_open(path: str) -> None:
    """Before the process opens anything of the database at ``path``: no other library may
    have it open, and its lock database must be usable (a damaged one is set aside now, while
    no descriptor of ours is on it)."""
    foreign.check_open(path)
    lockdb_health.ensure_usable(path)


def _value(conn: apsw.Connection, sql: str) -> Any:
    """The first column of the first row of a statement that always returns one."""
    row = conn.execute(sql).fetchone()
    assert row is not None, sql
    return row[0]
