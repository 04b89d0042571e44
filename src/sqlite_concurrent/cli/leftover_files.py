"""The files beside a database and why each is there, for ``status`` and ``check``.

SQLite removes ``-wal`` and ``-shm`` at the last close, and the library removes ``-locks`` and the
journals (:mod:`sqlite_concurrent.process.leftovers`); whatever stays is explained here: in use
by a live process, left by one that exited without closing, or set aside by recovery.
"""

from __future__ import annotations

import fcntl
import os
import struct
import time
from dataclasses import dataclass

from ..locking import oslock
from ..locking.lockdb import LockDB
from ..locking.processes import process_start_time
from ..process import leftovers
from ..process.holding import held


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
    for path, when in leftovers.quarantined(db_path):
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))
        found.append(
            Leftover(
                os.path.basename(path),
                False,
                f"set aside by recovery at {stamp}: it could not be trusted and was never "
                f"applied (deleted after {leftovers.QUARANTINE_DAYS} days)",
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
