"""The files beside a database once nobody uses them: removed at the last close, explained when
they stay.

SQLite deletes ``-wal`` and ``-shm`` when the last connection to a database closes, proving no
other process has it open with an exclusive lock on the database file.  The lock database
``-locks`` (and its own ``-wal``/``-shm``) goes the same way: every process of ours holds a
shared presence lock on ``-locks`` from its first open of the database until its last close
(:mod:`.oslock`), so the last closer, once its own lock-database connections are closed (SQLite
has then deleted ``-locks-wal`` unless a connection outside this library still has it open),
turns its presence lock exclusive and, only if that succeeds, deletes ``-locks-wal``,
``-locks-shm`` and then ``-locks``, releasing the lock last.  An opener locks ``-locks`` before it
opens anything else of the database and checks that the path still names the file it locked, so
it waits out a deletion under way and then creates a fresh one; it never uses a file being
deleted.

An application that deletes the database while connections are open (Django's test runner
does) leaves SQLite unable to checkpoint: the stdlib then leaves ``-wal`` and ``-shm`` for good,
and a new database created at the path would read the old WAL's frames.  The last closer of such
a database deletes them too, while it holds the exclusive presence lock.

Recovery sets aside a journal it cannot trust as ``*.quarantined-<time>`` (:mod:`.journal`).
:func:`prune_quarantined` deletes those older than :data:`QUARANTINE_DAYS` days, and all but the
:data:`QUARANTINE_KEEP` newest, whenever a process first opens the database and on ``recover``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import struct
import time
from dataclasses import dataclass

import apsw

from . import oslock

QUARANTINE_DAYS = 7
QUARANTINE_KEEP = 10
_QUARANTINED = re.compile(r"\.quarantined-(\d+)$")


def last_user(db_path: str) -> bool:
    """Whether this process is the last to use the database's lock database; if so no process
    of ours can open the database until the holding module lets go of ``-locks``, releasing the
    presence lock, and :func:`remove_lock_database` may run.

    Call with every lock-database connection of the process closed.  ``-locks-wal`` is then
    gone unless a connection outside this library has the lock database open, or another
    process of ours closed its own at the same moment (SQLite's last-close check then fails in
    both): the last closer asks SQLite again (:func:`settle_wal`).
    """
    locks = db_path + "-locks"
    if not oslock.sole_user(locks):
        return False
    if os.path.lexists(locks + "-wal"):
        settle_wal(locks)
    return not os.path.lexists(locks + "-wal")


def settle_wal(path: str) -> None:
    """Open and close a connection to the WAL database at ``path``: if it is the only one,
    SQLite checkpoints and deletes ``-wal`` and ``-shm`` as it does at every last close.  Only
    from the last process of ours (:func:`last_user`) and with none of this process's SQLite
    connections on the file open: closing one drops the process's POSIX locks on it."""
    with contextlib.suppress(apsw.Error):
        conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READWRITE)
        try:
            conn.execute("SELECT 1 FROM sqlite_schema LIMIT 1").fetchall()
        finally:
            conn.close()


def remove_lock_database(db_path: str) -> None:
    """Delete ``-locks`` and its ``-wal``/``-shm``, ``-locks`` last: an opener that finds it
    waits for the presence lock and then sees it gone.  Only after :func:`last_user`."""
    locks = db_path + "-locks"
    for suffix in ("-wal", "-shm", ""):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(locks + suffix)


def identities(db_path: str) -> dict[str, tuple[int, int]]:
    """(device, inode) of the database's ``-wal`` and ``-shm`` when the database file itself is
    gone from its path: after the last close they are no one's (see the module's docstring)."""
    if os.path.lexists(db_path):
        return {}
    found = {}
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            st = os.stat(db_path + suffix, follow_symlinks=False)
            found[suffix] = (st.st_dev, st.st_ino)
    return found


def remove_orphaned_wal(db_path: str, found: dict[str, tuple[int, int]]) -> None:
    """Delete the deleted database's ``-wal``/``-shm`` that :func:`identities` found, if they are
    still the same files and no database was created at the path meanwhile.  Call while this
    process is the :func:`last_user`, before :func:`remove_lock_database`."""
    if os.path.lexists(db_path):
        return
    for suffix, identity in found.items():
        with contextlib.suppress(FileNotFoundError):
            st = os.stat(db_path + suffix, follow_symlinks=False)
            if (st.st_dev, st.st_ino) == identity:
                os.unlink(db_path + suffix)


def quarantined(db_path: str) -> list[tuple[str, int]]:
    """(path, time it was set aside) of every ``*.quarantined-<time>`` file of ``db_path``."""
    directory, name = os.path.split(os.path.abspath(db_path))
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    found = []
    for each in names:
        match = _QUARANTINED.search(each)
        if match and each.startswith(name + "-"):
            found.append((os.path.join(directory, each), int(match.group(1))))
    return sorted(found, key=lambda f: f[1], reverse=True)


def prune_quarantined(db_path: str, now: float | None = None) -> list[str]:
    """Delete quarantined files older than :data:`QUARANTINE_DAYS` days and all but the
    :data:`QUARANTINE_KEEP` newest; returns the paths deleted."""
    cutoff = (time.time() if now is None else now) - QUARANTINE_DAYS * 86400
    removed = []
    for rank, (path, when) in enumerate(quarantined(db_path)):
        if when < cutoff or rank >= QUARANTINE_KEEP:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                removed.append(path)
    return removed


@dataclass(frozen=True)
class Leftover:
    """A file beside the database, whether something uses it now, and why it is there."""

    name: str
    live: bool
    why: str


def describe(db_path: str) -> list[Leftover]:
    """What is beside ``db_path`` and why; reads, never locks or writes.

    Whether a file is in use is asked of the kernel's locks (F_GETLK), through a descriptor
    that is then closed, which would drop this process's own POSIX locks on the file: a process
    that has the database open through this library counts it as in use without asking.
    """
    from .holding import held
    from .lockdb import LockDB, process_start_time

    db_path = os.path.abspath(db_path)
    directory, name = os.path.split(db_path)
    ours = held(db_path) or LockDB.open_in_process(db_path)
    found = []
    for suffix, what in (("-wal", "SQLite's WAL"), ("-shm", "SQLite's WAL index")):
        if os.path.lexists(db_path + suffix):
            live = ours or _shm_in_use(db_path + "-shm")
            found.append(Leftover(name + suffix, live, _sqlite_why(what, live)))
    locks = db_path + "-locks"
    live = ours or _present(locks)
    for suffix in ("", "-wal", "-shm"):
        if os.path.lexists(locks + suffix):
            why = (
                "the lock database, in use by a process that has the database open"
                if live
                else "the lock database, left by a process that exited without closing "
                "(removed at the next last close)"
            )
            found.append(Leftover(name + "-locks" + suffix, live, why))
    prefix = name + "-journal"
    for each in sorted(os.listdir(directory or ".")):
        pid = each[len(prefix) :] if each.startswith(prefix) else ""
        if pid.isdigit():
            alive = process_start_time(int(pid)) is not None
            why = (
                f"the journal of live process {pid}"
                if alive
                else f"the journal of dead process {pid} (recovery deletes it)"
            )
            found.append(Leftover(each, alive, why))
    for path, when in quarantined(db_path):
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))
        found.append(
            Leftover(
                os.path.basename(path),
                False,
                f"set aside by recovery at {stamp}: it could not be trusted and was never "
                f"applied (deleted after {QUARANTINE_DAYS} days)",
            )
        )
    return found


def _sqlite_why(what: str, live: bool) -> str:
    if live:
        return f"{what}, in use by a connection that has the database open"
    return (
        f"{what}, left by a process that exited without closing or by a read-only "
        "connection (SQLite removes it at the next last close)"
    )


def _locked(path: str, offset: int, *, ofd: bool) -> bool:
    """Whether another process holds a lock on byte ``offset`` of ``path`` (a query: takes
    none, and closing the descriptor drops no lock, as this process holds none there)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        query = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, offset, 1, 0)
        getlk = getattr(fcntl, "F_OFD_GETLK", 36) if ofd else fcntl.F_GETLK
        answer = fcntl.fcntl(fd, getlk, query)
    except OSError:
        return False
    finally:
        os.close(fd)
    return struct.unpack("hhqqi4x", answer)[0] != fcntl.F_UNLCK


def _present(locks: str) -> bool:
    return _locked(locks, oslock.presence_offset(), ofd=True)


def _shm_in_use(shm: str) -> bool:
    # Every connection with the WAL open holds a shared lock on the WAL index's "dead man
    # switch" byte, offset 128 (os_unix.c: UNIX_SHM_DMS = UNIX_SHM_BASE + SQLITE_SHM_NLOCK).
    return _locked(shm, 128, ofd=False)
