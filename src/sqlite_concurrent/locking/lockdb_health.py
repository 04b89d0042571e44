"""A lock database ``<db>-locks`` that cannot be one: garbage, truncated, or another
application's SQLite database.

It holds transient state only (who holds what now), so once no live process uses it, it is
moved aside as ``<db>-locks.quarantined-<UTC time>`` (with its ``-wal`` and ``-shm``) and the
next open starts a fresh one; transaction ids stay unique because they continue from the
commit markers in the database (:class:`~.lockdb.LockDB`'s ``first_txn_id``).  A foreign
database is never written to: neither our schema nor a checkpoint.

"No live process uses it" is proven with the locks every user of the file holds for as long
as it has it open: SQLite's SHARED lock on the database file (bytes PENDING_BYTE+2 to +511;
a WAL-mode connection keeps it between transactions) and its DMS lock on byte 128 of the
``-shm`` (https://sqlite.org/walformat.html, section 2.3.1), plus our own kernel locks
(:mod:`.oslock`).  They are only looked at (``F_OFD_GETLK``), never taken, so a look that
races a process opening the file costs that process nothing; moving the file aside runs under
a lock on the file's own inode (:data:`.oslock.QUARANTINE`), so two processes that both find it
damaged move it once, and the second then finds the fresh one.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import time
from dataclasses import dataclass

import apsw

from .. import filenames
from ..errors import OperationalError
from ..storage import sidecar
from . import oslock

log = logging.getLogger("sqlite_concurrent")

# The lock database's own tables and indexes (lockdb._SCHEMA); anything else is not ours.
OURS = frozenset(
    {
        "meta",
        "holders",
        "transactions",
        "locks",
        "waiters",
        "table_versions",
        "sqlite_sequence",
        "locks_txn",
        "waiters_resource",
        "waiters_txn",
    }
)

# SQLite's unix VFS (os_unix.c): PENDING_BYTE 0x40000000, then RESERVED, then the SHARED range
# of 510 bytes; the -shm's lock bytes 120-127 and its DMS byte 128 (wal.c, WALINDEX_LOCK_OFFSET).
_DB_LOCKS = (0x40000000, 512)
_SHM_LOCKS = (120, 9)
_OUR_LOCKS = (oslock.offset(oslock.MERGE), oslock.QUARANTINE - oslock.MERGE)

# PRAGMA application_id of our lock databases ("SCLK"): tells one from other SQLite files.
APPLICATION_ID = 0x53434C4B

_ATTEMPTS = 5  # files moved aside by others in between: look again, this many times


@dataclass(frozen=True)
class Quarantined:
    """A lock database moved aside: from ``path`` to ``moved_to``, and why."""

    path: str
    moved_to: str
    reason: str


def foreign_tables(conn: apsw.Connection) -> str | None:
    """Why the open database ``conn`` is not a lock database of ours (tables that are not ours,
    or tables without our schema-version marker), or ``None``: it is ours, or empty."""
    names = {n for (n,) in conn.execute("SELECT name FROM sqlite_schema")}
    names = {n for n in names if not n.startswith("sqlite_autoindex_")}
    if not names:
        return None
    strangers = sorted(names - OURS)
    if strangers:
        shown = ", ".join(strangers[:5])
        return f"it is another application's SQLite database (tables {shown})"
    if (
        "meta" not in names
        or not conn.execute("SELECT 1 FROM meta WHERE key = 'schema_version'").fetchall()
    ):
        return "it is a SQLite database without the lock database's schema-version marker"
    return None


def looks_ours(locks: str) -> bool:
    """Whether the lock database's header says it is ours and no shorter than its pages: the
    common case, told from 100 bytes without opening it with SQLite.  ``False`` means "look
    closer" (:func:`damage`): a WAL may hold pages the file does not have yet, and the
    application id reaches the file with the first checkpoint.

    Offsets from https://sqlite.org/fileformat2.html, section 1.3: page size at 16, change
    counter at 24, database size in pages at 28 (valid if the change counter equals the
    version-valid-for number at 92), application id at 68.
    """
    try:
        with open(locks, "rb") as f:
            header = f.read(100)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return False
    if len(header) < 100 or header[:16] != b"SQLite format 3\0":
        return False
    if int.from_bytes(header[68:72], "big") != APPLICATION_ID:
        return False
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    return header[24:28] != header[92:96] or size >= pages * page_size


def damage(locks: str) -> str | None:
    """Why the file at ``locks`` cannot serve as a lock database, or ``None`` if it can (it is
    ours and intact, empty, or absent).  Reads only.

    :raises OperationalError: it cannot be read at all (permissions, say): nothing here says
        it is damaged, and moving it would not help.
    """
    if not os.path.exists(locks) or os.path.getsize(locks) == 0:
        return None
    # Read-only: a foreign database must not even be checkpointed by our closing connection.
    uri = filenames.uri(os.path.abspath(locks), "mode=ro")
    try:
        conn = apsw.Connection(uri, flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
    except apsw.Error as e:
        raise unusable(locks, e) from e
    try:
        conn.set_busy_timeout(5_000)
        problems = [r for (r,) in conn.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            return "its content is damaged (" + "; ".join(map(str, problems[:2])) + ")"
        return foreign_tables(conn)
    except (apsw.NotADBError, apsw.CorruptError) as e:
        return "it is not an intact SQLite database (" + _bare(e) + ")"
    except apsw.BusyError:
        return None  # a writer holds it: readable, so not damaged
    except (apsw.IOError, apsw.ReadOnlyError):
        # A read-only look can fail while other processes write the file or rebuild its WAL
        # index after one of them died (seen once in tests/test_soak.py: "disk I/O error" while
        # writers were killed and restarted).  That says nothing of damage; if the file really
        # cannot be read, opening it for use (lockdb.py) says so.
        return None
    except apsw.Error as e:
        raise unusable(locks, e) from e
    finally:
        conn.close()


def unusable(locks: str, e: BaseException) -> OperationalError:
    """The error for a lock database that cannot be opened or written (not damaged)."""
    why = e.strerror if isinstance(e, OSError) and e.strerror else _bare(e)
    return OperationalError(
        f"cannot use the lock database {locks}: {why}; every process that opens the database "
        "needs read and write access to it and to its directory"
    )


def ensure_usable(db_path: str, *, open_here: bool = False) -> Quarantined | None:
    """Make sure ``<db_path>-locks`` can serve as a lock database: if it is damaged or foreign
    and no live process uses it, move it aside (logging a warning that names both paths) and
    return what was moved; else ``None``.

    ``open_here``: this process has it open itself, which proves it in use.

    :raises OperationalError: it is damaged but in use, cannot be read, or cannot be moved.
    """
    locks = db_path + "-locks"
    for _ in range(_ATTEMPTS):
        if looks_ours(locks):
            return None
        before = _identity(locks)
        reason = damage(locks)
        if reason is None:
            return None
        if open_here:
            raise _in_use(locks, reason, f"this process (pid {os.getpid()})")
        moved = _quarantine(db_path, before, reason)
        if moved is not None:
            log.warning(
                "sqlite_concurrent: lock database %s moved to %s: %s; a fresh one replaces it",
                moved.path,
                moved.moved_to,
                moved.reason,
            )
            return moved
    raise OperationalError(f"the lock database {locks} keeps changing while being checked")


def _quarantine(db_path: str, before: tuple[int, int] | None, reason: str) -> Quarantined | None:
    """Move the damaged lock database aside if nobody uses it; ``None`` if the file at the path
    is no longer the one found damaged (look again)."""
    locks = db_path + "-locks"
    fd = _open_if_there(locks)
    if fd is None:
        return None
    # Closing fd drops this process's POSIX locks on the file: it has none (it does not have
    # the file open, or open_here would have said so).
    try:
        _lock(fd, oslock.offset(oslock.QUARANTINE), 1, fcntl.F_WRLCK, wait=True)
        if _identity(locks) != before or _fd_identity(fd) != before:
            return None
        user = _user(fd, locks + "-shm")
        if user is not None:
            raise _in_use(locks, reason, user)
        return Quarantined(locks, _move_aside(locks), reason)
    finally:
        os.close(fd)


def _user(fd: int, shm: str) -> str | None:
    """Who holds a lock showing it has the lock database open, or ``None``."""
    for start, length in (_DB_LOCKS, _OUR_LOCKS):
        found = _lock(fd, start, length, fcntl.F_WRLCK, wait=None)
        if found is not None:
            return found
    shm_fd = _open_if_there(shm)
    if shm_fd is None:
        return None
    try:
        return _lock(shm_fd, *_SHM_LOCKS, fcntl.F_WRLCK, wait=None)
    finally:
        os.close(shm_fd)


def _open_if_there(path: str) -> int | None:
    """A descriptor on the file at ``path``, or ``None`` if there is none.

    :raises OperationalError: it is there but cannot be opened.
    """
    try:
        return sidecar.open_existing(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise unusable(path, e) from e


def _lock(fd: int, start: int, length: int, kind: int, *, wait: bool | None) -> str | None:
    """``wait=None``: only look (``F_OFD_GETLK``), returning who holds a conflicting lock;
    otherwise take it (an OFD lock: it goes with ``fd`` and nothing else)."""
    request = struct.pack("hhqqi4x", kind, os.SEEK_SET, start, length, 0)
    if wait is None:
        answer = fcntl.fcntl(fd, oslock.F_OFD_GETLK, request)
        held, _, _, _, pid = struct.unpack("hhqqi4x", answer)
        if held == fcntl.F_UNLCK:
            return None
        return f"process {pid}" if pid > 0 else "another process"
    fcntl.fcntl(fd, oslock.F_OFD_SETLKW if wait else oslock.F_OFD_SETLK, request)
    return None


def _move_aside(locks: str) -> str:
    """Rename ``locks`` and its ``-wal``/``-shm`` to an unused ``.quarantined-<UTC time>``
    name, the sidecars first: a fresh lock database must not find the old WAL beside it."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = f"{locks}.quarantined-{stamp}"
    n = 1
    while any(os.path.lexists(target + s) for s in ("", "-wal", "-shm")):
        n += 1
        target = f"{locks}.quarantined-{stamp}-{n}"
    for suffix in ("-wal", "-shm", ""):
        if os.path.lexists(locks + suffix):
            _rename_new(locks + suffix, target + suffix)
    return target


def _rename_new(source: str, target: str) -> None:
    """Rename without ever replacing a file at ``target`` (a hard link fails if it exists)."""
    try:
        os.link(source, target, follow_symlinks=False)
    except FileExistsError as e:
        raise OperationalError(f"cannot move {source} aside: {target} exists") from e
    except OSError:
        if os.path.lexists(target):
            raise OperationalError(f"cannot move {source} aside: {target} exists") from None
        os.rename(source, target)  # no hard links on this filesystem
        return
    os.unlink(source)


def _in_use(locks: str, reason: str, user: str) -> OperationalError:
    return OperationalError(
        f"the lock database {locks} cannot be used: {reason}; {user} still has it open. "
        "Stop every process using the database, then run `sqlite-concurrent recover` on it "
        "(it moves the damaged lock database aside) or open it again"
    )


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _fd_identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _bare(e: BaseException) -> str:
    message = str(e)
    head, sep, tail = message.partition(": ")
    return tail if sep and head.endswith("Error") else message


def damaged(locks: str, reason: str) -> OperationalError:
    """The error for a lock database found damaged or foreign where it cannot be set aside."""
    return OperationalError(
        f"the lock database {locks} cannot be used: {reason}. When no process has the "
        "database open, the next connection or `sqlite-concurrent recover` moves it aside"
    )


def failed(locks: str, e: BaseException) -> OperationalError:
    """The error for opening the lock database at ``locks`` failing with ``e``."""
    if isinstance(e, (apsw.NotADBError, apsw.CorruptError)):
        return damaged(locks, "it is not an intact SQLite database (" + _bare(e) + ")")
    return unusable(locks, e)
