"""What this process holds for each database it has open, and when it lets go.

The connections of one process share, per database (a :class:`Holding`): the holder row in the
lock database, an anchor connection, the descriptors snapshots read through
(:class:`~.snapshot.WalFiles`), the lock database's descriptors and the row-lock publisher's
thread.  The first connection to open a database takes them; the last to close lets go of them
all, so that SQLite's own last-close checkpoint runs: with no other process on the database the
main file then holds every commit and ``-wal``/``-shm`` are gone, as after the stdlib's last
close (a copy of the file is complete; Django's parallel test runner clones databases so).

Order matters (architecture.md, "Snapshots, and the locks a close drops"): closing any descriptor on
a file drops every POSIX lock this process holds on it.  So the anchor closes after every other
SQLite connection of ours, the descriptors after the anchor, and none of them while anything else in
the process has the database's WAL open (the stdlib's own copy of SQLite, say): our last close would
checkpoint and delete the WAL under it and take its locks with ours.  The anchor and descriptors
then stay until the process exits, as they would without this module.

A forked child inherits its parent's connections but none of its POSIX locks and none of its
threads, and SQLite forbids carrying a connection across fork()
(https://sqlite.org/howtocorrupt.html, section 2.6).  Inherited connections refuse to work and
close quietly, touching nothing the parent relies on (its holder row, journal, locks).  Before
the child opens a connection of its own, the inherited SQLite connections are closed
(:func:`settle`): SQLite keeps its lock bookkeeping per file, not per process, so a fresh
connection would count itself among the inherited ones and take no lock of its own in the
kernel (measured: the child then held no lock in /proc/locks), and the parent's last close
could delete the WAL under it.  Closing an idle inherited connection changes nothing for the
parent: the child has no lock to drop, and SQLite's close checkpoints only if it gets the
database to itself.  One caught in a write transaction on the database or its lock database (an
exclusive transaction, or another thread merging, when the process forked) is kept open and
never touched: rolling it back would rewrite parts of the WAL index the parent is still using.
SQLite's bookkeeping then stays wrong in the child, so the child refuses to open that database
(:class:`OperationalError`) rather than run without locks.  A transaction's own connection
reads through the overlay VFS, not the file, and takes no part in this.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

import apsw

from .. import filenames
from ..errors import OperationalError
from ..locking import oslock
from ..locking.lockdb import LockDB
from ..locking.publisher import Publisher
from ..storage import snapshot
from ..storage.overlay import VFS_NAME
from . import leftovers, plain_open

_cond = threading.Condition()  # guards the registry below and every Holding's counts
_held: dict[str, Holding] = {}  # by absolute path
_inherited: list[Holding] = []  # in a forked child: the parent's, not yet settled
_kept: list[apsw.Connection] = []  # inherited connections that must never be closed
_unusable: dict[str, int] = {}  # in a forked child: databases it must not open -> parent pid
_unsettled = False  # in a forked child, until settle() has run
_settle_lock = threading.Lock()


class Handles(list[apsw.Connection]):
    """The SQLite connections one connection of ours has open, known weakly to its holding (a
    forked child must find them)."""

    __slots__ = ("__weakref__",)


class Holding:
    """What this process holds for one database; see the module's docstring."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.pid = os.getpid()
        self.users = 0  # connections open or opening
        self.inherited = False  # set in a forked child: none of this is the child's
        self.publisher = Publisher(path)
        self._releasing = False
        self._lock = threading.Lock()  # opening anchors
        # Database file (device, inode) -> its anchor and the -wal the anchor opened.
        self._anchors: dict[tuple[int, int], tuple[apsw.Connection, tuple[int, int]]] = {}
        self._guards: dict[tuple[int, int], plain_open.Guard] = {}
        self._files: dict[int, snapshot.WalFiles] = {}  # every generation handed out, by id
        self._handles: weakref.WeakValueDictionary[int, Handles] = weakref.WeakValueDictionary()
        self._frozen: list[apsw.Connection] = []  # in a forked child: all it inherited
        # The process's connections to the database (dbapi.Connection), open or opening.
        self.connections: weakref.WeakSet[Any] = weakref.WeakSet()

    def track(self, handles: Handles) -> None:
        """Know ``handles`` (a connection's own SQLite connections) until it leaves."""
        self._handles[id(handles)] = handles

    def files(self, identity: tuple[int, int]) -> snapshot.WalFiles:
        """The descriptors snapshots of the database file ``identity`` (device, inode) read
        through.  Call once a connection of ours has opened and read the file.

        The first call per file opens the anchor: a connection that stays open until the
        process lets go, so APSW's SQLite holds locks on the file and defers closing any of its
        descriptors (unixClose's pUnused list), and closing one of ours drops nobody's locks,
        not even another SQLite library's in the process.  Measured: without it, closing our
        connection deleted -wal under an open stdlib read transaction.
        """
        with self._lock:
            if identity not in self._anchors:
                anchor = apsw.Connection(*filenames.for_sqlite(self.path))
                anchor.execute("SELECT 1 FROM sqlite_schema LIMIT 1").fetchall()
                wal = os.stat(self.path + "-wal")  # the anchor has it open from now on
                self._anchors[identity] = (anchor, (wal.st_dev, wal.st_ino))
                self._guards[identity] = plain_open.Guard(self.path, identity)
            files = snapshot.WalFiles.for_database(self.path, identity)
            self._files[id(files)] = files
        return files

    def leave(self, handles: Handles, lockdb: LockDB | None) -> None:
        """A connection of ours closes, its own work done (rollback, journal): its SQLite
        connections close, and with the last connection of the process the holder row goes
        and everything else held for the database (see the module's docstring)."""
        with _cond:
            self.users -= 1
            self._handles.pop(id(handles), None)
            last = self._releasing = self.users == 0
        try:
            if lockdb is not None:
                if last:
                    with contextlib.suppress(apsw.Error):
                        lockdb.unregister_holder()
                lockdb.close()
            close_all(handles)
        finally:
            if last:
                self._release()

    def _release(self) -> None:
        kept = False
        try:
            kept = not self._let_go()
        finally:
            with _cond:
                self._releasing = False
                if not kept and _held.get(self.path) is self:
                    del _held[self.path]
                _cond.notify_all()

    def _let_go(self) -> bool:
        """Close what the process still holds, in order; ``False`` if the anchors and
        descriptors must stay because something else in the process has the WAL open."""
        self.publisher.stop()  # its thread's lock-database connection closes with it
        locks = self.path + "-locks"
        last = False
        if not LockDB.open_in_process(self.path):
            snapshot.WalFiles.forget(locks)
            # The last process: no process of ours can open the database until the presence
            # lock is released, and what is beside it goes (leftovers.py).
            last = leftovers.last_user(self.path)
        try:
            if any(self._wal_shared(wal) for _, wal in self._anchors.values()):
                self.publisher = Publisher(self.path)
                return False
            orphaned = leftovers.identities(self.path) if last else {}
            self._close_anchors()
            if orphaned:
                leftovers.remove_orphaned_wal(self.path, orphaned)
            elif last and os.path.lexists(self.path + "-wal"):
                # Another process of ours closed at the same moment: SQLite's last-close
                # check failed in both.  Nothing of ours can open the database now.
                leftovers.settle_wal(self.path)
            return True
        finally:
            if last:
                leftovers.remove_lock_database(self.path)
            if not LockDB.open_in_process(self.path):
                oslock.forget(locks)

    def _close_anchors(self) -> None:
        anchors, self._anchors = self._anchors, {}
        files, self._files = self._files, {}
        guards, self._guards = self._guards, {}
        for guard in guards.values():
            guard.release()  # it would refuse SQLite's last-close checkpoint below
        for anchor, _ in anchors.values():
            # The last SQLite connection of the process on the file: SQLite checkpoints and
            # deletes the WAL here, unless another process has the database open.
            with contextlib.suppress(apsw.Error):
                anchor.close()
        for guard in guards.values():
            guard.close()
        for each in files.values():
            snapshot.WalFiles.forget(self.path, each)

    def _wal_shared(self, wal: tuple[int, int]) -> bool:
        """Whether anything in the process but the anchor has the WAL ``wal`` open, or the WAL
        at the path is another file now (only something else in the process could have
        deleted the one the anchor holds)."""
        try:
            now = os.stat(self.path + "-wal")
        except FileNotFoundError:
            return True
        if (now.st_dev, now.st_ino) != wal:
            return True
        listed = _descriptors()
        if listed is None:
            return True  # cannot tell: keep everything, as if never closed
        ours = {fd for f in self._files.values() for fd in (f.db, f.wal, f.shm, *f.retired)}
        return sum(fd not in ours and _identity(fd) == wal for fd in listed) > 1  # the anchor's

    def freeze(self) -> None:
        """In a forked child: take hold of every inherited SQLite connection, so that none is
        closed by garbage collection before :func:`settle` decides how."""
        self.inherited = True
        frozen = [conn for handles in list(self._handles.values()) for conn in handles]
        frozen += [anchor for anchor, _ in self._anchors.values()]
        if self.publisher.lockdb is not None:
            frozen.append(self.publisher.lockdb.conn)
        self._frozen = frozen

    def abandon(self) -> bool:
        """In a forked child: close the inherited SQLite connections that are idle; keep the
        others open for good.  Returns whether one on the database's files had to be kept
        (see the module's docstring)."""
        frozen, self._frozen = self._frozen, []
        kept = False
        for conn in frozen:
            try:
                if conn.txn_state() != apsw.SQLITE_TXN_WRITE:
                    conn.close()
                    continue
            except apsw.ConnectionClosedError:
                continue
            except apsw.Error:  # among others, in use by a thread that did not survive fork()
                pass
            _kept.append(conn)
            kept = kept or conn.open_vfs != VFS_NAME
        return kept


def close_all(handles: Handles) -> None:
    for conn in reversed(handles):
        with contextlib.suppress(apsw.Error):
            conn.close()
    handles.clear()


def _descriptors() -> list[int] | None:
    for listing in ("/proc/self/fd", "/dev/fd"):
        try:
            return [int(name) for name in os.listdir(listing)]
        except OSError:
            continue
    return None


def _identity(fd: int) -> tuple[int, int] | None:
    try:
        st = os.fstat(fd)
    except OSError:  # the listing's own descriptor, closed by now
        return None
    return st.st_dev, st.st_ino


def release_lock_database(path: str) -> None:
    """Close what a lock database opened outside a connection (recovery's) left open on the
    lock database of ``path`` (absolute), deleting it if no process uses it (leftovers.py);
    nothing while a connection of this process has the database open."""
    if held(path) or LockDB.open_in_process(path):
        return
    locks = path + "-locks"
    snapshot.WalFiles.forget(locks)
    try:
        if leftovers.last_user(path):
            leftovers.remove_lock_database(path)
    finally:
        oslock.forget(locks)


def acquire(path: str, first: Callable[[str], None] | None = None) -> Holding:
    """Count a connection opening the database at ``path`` (absolute).  Call it before the
    connection opens anything on the file, and :meth:`Holding.leave` once when it closes (or
    fails to open).

    ``first`` runs when the process holds nothing of the file yet, while no other thread of
    ours can be opening or closing it (so every descriptor on it is someone else's); what it
    raises refuses the open.
    """
    settle()
    if path in _unusable:
        raise OperationalError(
            f"cannot open {path} in process {os.getpid()}: it was forked from process "
            f"{_unusable[path]} while a write transaction was open on this database, so SQLite's "
            "locks on it cannot be trusted here (https://sqlite.org/howtocorrupt.html, section "
            "2.6); open it in a process forked outside write transactions, or spawned"
        )
    with _cond:
        while True:
            holding = _held.get(path)
            if holding is None:
                if first is not None:
                    first(path)
                holding = _held[path] = Holding(path)
            if not holding._releasing:
                break
            _cond.wait()  # its descriptors must close before this connection takes locks
        holding.users += 1
        return holding


def held(path: str) -> bool:
    """Whether this process has the database file at ``path`` open through this library now:
    a connection of ours is open or opening on it, or its anchor and descriptors stayed after
    the last close because something else in the process had the database open.  What a
    forked child inherited does not count.  Costs a ``stat``."""
    try:
        st = os.stat(path)
    except OSError:
        identity = None
    else:
        identity = (st.st_dev, st.st_ino)
    with _cond:
        if os.path.abspath(path) in _held:
            return True
        return any(identity in h._anchors for h in _held.values())


def settle() -> None:
    """In a forked child, close the inherited SQLite connections (see the module's docstring);
    the first connection the child opens does it first.  Elsewhere nothing to do."""
    global _unsettled
    if not _unsettled:
        return
    # Held throughout: no connection may open while inherited ones are still closing (their
    # close would release locks the new one believes it shares).
    with _settle_lock:
        if not _unsettled:
            return
        with _cond:
            pending = list(_inherited)
            _inherited.clear()
        for holding in pending:
            if holding.abandon():
                _unusable[holding.path] = holding.pid
        _unsettled = False


def _forked() -> None:
    global _cond, _settle_lock, _unsettled
    # Threads do not survive fork(): a lock one of them held would stay held in the child.
    _cond = threading.Condition()
    _settle_lock = threading.Lock()
    for holding in _held.values():
        holding.freeze()
        _inherited.append(holding)
    _held.clear()
    _unsettled = bool(_inherited)


os.register_at_fork(after_in_child=_forked)
