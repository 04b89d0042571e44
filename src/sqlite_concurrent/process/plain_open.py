"""The database file under a plain ``open()`` in this process: complete, and harmless to close.

Two things go wrong when code in the process opens a database file ours holds with Python's
``open()`` (``shutil.copy``; Django's parallel test runner clones its test database so):

* The copy misses every commit still in the WAL.  The stdlib's default rollback journal leaves
  the main file complete after each commit; our databases are in WAL mode.  So before such an
  open goes ahead (the ``open`` audit event, :func:`opened`), a passive checkpoint copies the
  WAL into the main file.  Passive, because a checkpoint that waited would hold SQLite's WAL
  write lock against merges while it waited (see :mod:`.checkpoint`); it is complete unless a
  transaction somewhere still reads an older snapshot, as a copy made while the stdlib writes
  is not complete either.
* Closing that descriptor drops every POSIX lock the process holds on the file
  (https://sqlite.org/howtocorrupt.html, section 2.2.1), among them the SHARED lock SQLite's
  connections keep on a WAL database for as long as they are open.  That lock is what stops
  another process's last close from checkpointing and deleting the WAL our connections still
  write (SQLite takes EXCLUSIVE on the main file to find out it is the last).  So while the
  process has the database open, a :class:`Guard` holds an open-file-description (OFD) read
  lock on the first byte of SQLite's SHARED range: OFD locks belong to the descriptor, not the
  process, so no other close drops it, and they conflict with POSIX locks, so nobody else's
  EXCLUSIVE succeeds while it is held.  Nothing else in WAL mode takes EXCLUSIVE on the main
  file (https://sqlite.org/walformat.html, section 2.3), so the guard changes nothing but that.
  It conflicts with this process's own SQLite too, so it is released just before the
  process's last connection to the file closes, letting SQLite's last-close checkpoint run.

The ``-shm`` is another matter: SQLite keeps its WAL write lock, checkpoint lock and readers'
marks there, and no guard can stand in for those.  So ``open()`` of a held database's ``-shm``
is refused (``OSError``, EBUSY) before anything is opened.  The ``-wal`` carries no lock and
may be read.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
from typing import Any

import apsw

from .. import filenames
from ..locking.oslock import F_OFD_SETLK, flock_struct
from ..storage import wal_readers

Identity = tuple[int, int]  # (st_dev, st_ino)

# SQLite's unix VFS (os_unix.c): SHARED is a read lock on SHARED_SIZE bytes from SHARED_FIRST,
# EXCLUSIVE a write lock on all of them.  One byte is enough to refuse every EXCLUSIVE.
_PENDING_BYTE = 0x40000000
_SHARED_FIRST = _PENDING_BYTE + 2

_guards: dict[Identity, Guard] = {}  # read without a lock by the audit hook
_lock = threading.Lock()


class Guard:
    """The OFD read lock on the database file ``identity`` at ``path`` (see the module's
    docstring); :meth:`release` it before the process's last SQLite connection to the file
    closes."""

    def __init__(self, path: str, identity: Identity) -> None:
        self.path = path
        self.identity = identity
        self._fd: int | None = None
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != identity:
            # Another file now has the name: none of ours holds a lock on it to drop.
            os.close(fd)
            return
        # From here the descriptor stays open until close(): closing it would drop the POSIX
        # locks of the SQLite connections that have the file open.
        self._fd = fd
        # Refused only while someone holds EXCLUSIVE, which the connection that opened the
        # file before this guard rules out; should it happen, plain opens still checkpoint.
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, F_OFD_SETLK, flock_struct(fcntl.F_RDLCK, _SHARED_FIRST))
        with _lock:
            _guards[identity] = self

    def release(self) -> None:
        """Let go of the lock; the descriptor stays open (closing it would drop the POSIX
        locks of the SQLite connections still open) until :meth:`close`."""
        with _lock:
            if _guards.get(self.identity) is self:
                del _guards[self.identity]
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.fcntl(self._fd, F_OFD_SETLK, flock_struct(fcntl.F_UNLCK, _SHARED_FIRST))

    def close(self) -> None:
        """Close the descriptor; call once no SQLite connection of the process has the file
        open."""
        self.release()
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def opened(file: Any, mode: Any) -> None:
    """The ``open`` audit event: Python's ``open()`` of ``file``.  When it is a database this
    process holds, checkpoint it first, so that what is read is every commit; when it is such a
    database's ``-shm``, refuse (see the module's docstring).  ``os.open`` (mode None) is this
    library's own way in and is left alone."""
    if not _guards or not isinstance(mode, str) or isinstance(file, int):
        return
    identity = file_identity(file)
    if identity is None:
        return
    guard = _guards.get(identity)
    # Litestream asks to be left every checkpoint (checkpoint.py).
    if guard is not None and not wal_readers.litestream_managed(guard.path, tables=False):
        checkpoint(guard.path)
    elif os.fsdecode(file).endswith("-shm"):
        for guard in list(_guards.values()):
            if file_identity(os.path.realpath(guard.path) + "-shm") == identity:
                raise OSError(
                    errno.EBUSY,
                    f"refused: {guard.path} is open in this process through sqlite_concurrent, "
                    "and closing any descriptor on its -shm would drop the locks SQLite keeps "
                    "there (https://sqlite.org/howtocorrupt.html, section 2.2.1), losing "
                    "commits; read it from another process",
                    os.fsdecode(file),
                )


def file_identity(path: Any) -> Identity | None:
    """(device, inode) of the file at ``path``, links followed; ``None`` if there is none."""
    try:
        st = os.stat(path)
    except (OSError, TypeError, ValueError):
        return None
    return st.st_dev, st.st_ino


def checkpoint(path: str) -> tuple[int, int]:
    """Copy what it can of the WAL of the database at ``path`` into the main file without
    waiting for anyone; returns (frames in the WAL, frames now in the main file)."""
    try:
        # Never creating it: a file no longer there has nothing to copy.
        conn = apsw.Connection(*filenames.for_sqlite(path, apsw.SQLITE_OPEN_READWRITE))
    except apsw.Error:
        return 0, 0
    try:
        # A connection learns the database is in WAL mode from its first read.
        conn.execute("SELECT 1 FROM sqlite_schema LIMIT 1").fetchall()
        return conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)
    except apsw.Error:
        return 0, 0
    finally:
        # The anchor keeps the file open, so SQLite defers closing this connection's
        # descriptors and nobody's locks drop.
        conn.close()


def _forked() -> None:
    global _lock
    _lock = threading.Lock()
    # The parent's descriptors: closing the child's copies leaves the parent's locks (OFD locks
    # live while any copy of the descriptor is open; the child holds no POSIX lock yet).
    for guard in _guards.values():
        fd, guard._fd = guard._fd, None
        if fd is not None:
            os.close(fd)
    _guards.clear()


os.register_at_fork(after_in_child=_forked)
