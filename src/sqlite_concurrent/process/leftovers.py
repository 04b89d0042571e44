"""The files beside a database once nobody uses them: removed at the last close.

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
import os
import re
import time

import apsw

from ..locking import oslock

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
