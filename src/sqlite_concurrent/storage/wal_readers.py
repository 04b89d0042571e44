"""Who holds the WAL: the read locks in ``-shm``, and whether Litestream manages the database.

A RESTART or TRUNCATE checkpoint needs an exclusive lock on every WAL read lock: on
WAL_READ_LOCK(0) to copy frames into the database (a reader there reads the database file alone),
and on WAL_READ_LOCK(1..4) to start the WAL over (https://sqlite.org/walformat.html, "The
WAL-Index Format": the lock bytes follow ``WalCkptInfo`` at offset 120, WAL_READ_LOCK(i) is byte
123 + i; ``aReadMark[i]``, the last frame reader i sees, is the u32 at 100 + 4 i).  A process in
a read transaction holds a shared POSIX lock on one of those bytes for its whole length, and
Linux lists every POSIX lock, with the holder's pid, in ``/proc/locks``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import urllib.parse
from dataclasses import dataclass

import apsw

_READ_LOCK_BYTE = 123  # WAL_READ_LOCK(i) is byte 123 + i of -shm
_READ_MARKS = struct.Struct("=5I")  # WalCkptInfo.aReadMark[5] at offset 100
_F_OFD_GETLK = getattr(fcntl, "F_OFD_GETLK", 36)
_PINNING_SLOTS = range(5)


@dataclass(frozen=True)
class Pin:
    """A reader holding read lock ``slot`` of the WAL index, seeing frames up to ``mark``."""

    pid: int | None  # None when the lock is not a POSIX lock (an OFD lock has no owner pid)
    slot: int
    mark: int | None

    def describe(self) -> str:
        who = f"process {self.pid}" if self.pid is not None else "a reader"
        return f"{who} holds WAL read lock {self.slot} (read mark {self.mark})"


def any_reader(shm_fd: int) -> bool:
    """Whether anything, this process included, holds a read lock that stops a restart.

    One ``F_OFD_GETLK``: it only asks, so it takes and drops nothing (unlike opening and
    closing a descriptor, which would drop this process's POSIX locks on the file).
    """
    query = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, _READ_LOCK_BYTE, 5, 0)
    try:
        answer = fcntl.fcntl(shm_fd, _F_OFD_GETLK, query)
    except OSError:
        return True  # cannot tell: let the full look decide
    return struct.unpack("hhqqi4x", answer)[0] != fcntl.F_UNLCK


def pins(
    shm_path: str, *, besides: frozenset[int] = frozenset(), shm_fd: int | None = None
) -> list[Pin]:
    """The readers holding ``shm_path``'s read locks, except processes in ``besides``.

    ``shm_fd``, a descriptor this process keeps open on the file, is where the read marks are
    read; without one they are read through a descriptor of their own only when this process
    holds no lock on the file (closing a descriptor drops them all).
    """
    try:
        st = os.stat(shm_path)
    except OSError:
        return []
    locks = _posix_locks(st.st_dev, st.st_ino)
    marks = _read_marks(shm_path, shm_fd, mine=any(pid == os.getpid() for pid, _, _ in locks))
    found = {
        Pin(pid, slot, marks[slot])
        for pid, start, end in locks
        if pid not in besides
        for slot in _PINNING_SLOTS
        if start <= _READ_LOCK_BYTE + slot <= end
    }
    return sorted(found, key=lambda p: (p.slot, p.pid or 0))


def _read_marks(shm_path: str, shm_fd: int | None, *, mine: bool) -> tuple[int | None, ...]:
    header = b""
    with contextlib.suppress(OSError):
        if shm_fd is not None:
            header = os.pread(shm_fd, 120, 0)
        elif not mine:
            fd = os.open(shm_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                header = os.pread(fd, 120, 0)
            finally:
                os.close(fd)
    if len(header) < 120:
        return (None,) * 5
    return _READ_MARKS.unpack_from(header, 100)


def _posix_locks(dev: int, ino: int) -> list[tuple[int, int, int]]:
    """(pid, first byte, last byte) of each POSIX lock granted on the file ``dev``/``ino``."""
    # /proc/locks: "N: POSIX  ADVISORY  READ  <pid> <major>:<minor>:<inode> <start> <end>",
    # device numbers in hex; lines with "->" are waiters, not holders.
    file_id = f"{os.major(dev):02x}:{os.minor(dev):02x}:{ino}"
    found = []
    with contextlib.suppress(OSError), open("/proc/locks") as f:
        for line in f:
            fields = line.split()
            if len(fields) < 8 or fields[1] != "POSIX" or fields[5] != file_id:
                continue
            end = fields[7]
            with contextlib.suppress(ValueError):
                found.append((int(fields[4]), int(fields[6]), 2**63 if end == "EOF" else int(end)))
    return found


def litestream_managed(db_path: str, *, tables: bool = True) -> bool:
    """Whether Litestream replicates the database.

    Litestream keeps its state in ``.<name>-litestream`` beside the database unless its
    ``meta-path`` setting puts it elsewhere, and creates the tables ``_litestream_seq`` and
    ``_litestream_lock`` in the database; ``tables=False`` looks only beside it.
    """
    head, name = os.path.split(db_path)
    if os.path.isdir(os.path.join(head, f".{name}-litestream")):
        return True
    return tables and litestream_tables_at(db_path)


def litestream_tables_at(db_path: str) -> bool:
    """Whether the database at ``db_path`` holds Litestream's tables.

    They are read through a read-only connection of its own, not one whose statements the
    application sees, and it creates no file: without both ``-wal`` and ``-shm`` (SQLite would
    create them) it reads the database file alone.
    """
    if not os.path.exists(db_path):
        return False
    uri = "file:" + urllib.parse.quote(os.fsencode(db_path))
    if not (os.path.exists(db_path + "-wal") and os.path.exists(db_path + "-shm")):
        uri += "?immutable=1"
    try:
        reader = apsw.Connection(uri, flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
    except apsw.Error:
        return False
    try:
        return _has_litestream_tables(reader)
    finally:
        reader.close()


def _has_litestream_tables(conn: apsw.Connection) -> bool:
    try:
        found = conn.execute(
            "SELECT count(*) FROM main.sqlite_schema"
            " WHERE type = 'table' AND name IN ('_litestream_seq', '_litestream_lock')"
        ).fetchall()
    except apsw.Error:
        return False  # not a database, or locked: the next look decides
    return found == [(2,)]
