"""Kernel-blocking inter-process locks.

Waiters sleep in the kernel and wake as soon as the holder releases (or dies), instead of polling
the way SQLite's busy handler and filelock do (architecture.md, "Locks and waiting").

Locks are open-file-description (OFD) byte-range locks on the ``<db>-locks`` file at offsets far
beyond the bytes SQLite itself locks (PENDING_BYTE is 0x40000000), so they never interact with
SQLite's POSIX locks on that file.  OFD locks belong to the open file description, not the
process, and closing another descriptor does not drop them.  Threads of one process share the
descriptor, so each lock also has a process-local mutex.

The descriptor is opened once per process and closed only when the process lets go of the
database (:func:`forget`): closing any descriptor on a file drops every POSIX lock this process
holds on it, including the lock database's own (architecture.md, "Snapshots, and the locks a close
drops").  A forked child closes its inherited copies at once: the open file description (and any OFD
lock on it) lives as long as any copy, so a parent that died holding the merge lock would otherwise
keep it held for the child's lifetime.

Presence: while a process has the descriptor open it holds a shared lock on the ``PRESENCE``
byte, so a process that gets it exclusively knows no other process has the file open through
this module, and may delete it (:mod:`.leftovers`).  An opener takes its shared lock and then
checks that the path still names the file it locked: one deleted under it is opened again, so no
two processes ever lock different files under one name.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import threading
import time

from ..errors import OperationalError
from ..storage import sidecar

# Linux F_OFD_* values (include/uapi/asm-generic/fcntl.h); Python exposes them on 3.9+ Linux.
_F_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", 37)
_F_OFD_SETLKW = getattr(fcntl, "F_OFD_SETLKW", 38)
F_OFD_GETLK = getattr(fcntl, "F_OFD_GETLK", 36)
F_OFD_SETLK, F_OFD_SETLKW = _F_OFD_SETLK, _F_OFD_SETLKW

_BASE = 1 << 40  # far past every byte SQLite locks

MERGE = 0
LOCKDB = 1
SNAPSHOT_GATE = 2
PRESENCE = 3
QUARANTINE = 4  # held while a damaged lock database is moved aside (lockdb_health)
SPINNER = 5  # held by the one waiter for the merge lock that spins (ByteLock.acquire)

_fds: dict[tuple[int, str], int] = {}
# This process's id, kept here: os.getpid() is a system call, and a probe after every
# merge-lock release looks a descriptor up.
_pid = os.getpid()
# Bumped in a forked child and when a descriptor is closed: ByteLocks look theirs up again.
_generation = 0
_mutexes: dict[tuple[str, int], threading.Lock] = {}
# Which thread holds each mutex: a thread that asks again for a lock it holds (a second
# connection of the thread, while the first holds the merge lock for a transaction) would wait
# for itself forever.
_holders: dict[tuple[str, int], int] = {}
_registry_lock = threading.Lock()


def _forked() -> None:
    global _generation, _registry_lock, _pid
    _generation += 1
    _pid = os.getpid()
    # Threads do not survive fork(): a mutex or the registry lock one of them held would stay
    # held in the child for good.
    _registry_lock = threading.Lock()
    _mutexes.clear()
    _holders.clear()
    for fd in _fds.values():
        os.close(fd)  # the child holds no POSIX lock yet: nothing of its own can drop
    _fds.clear()


os.register_at_fork(after_in_child=_forked)


def held_here() -> set[tuple[str, int]]:
    """The locks of this module this thread holds (:attr:`ByteLock.key`)."""
    me = threading.get_ident()
    return {key for key, holder in list(_holders.items()) if holder == me}


def forget(path: str) -> None:
    """Close this process's descriptor on ``path``.

    Only when no lock of this module on the file is held and no SQLite connection of this
    process has the file open: closing it drops the process's POSIX locks on the file.
    """
    global _generation
    with _registry_lock:
        fd = _fds.pop((_pid, path), None)
        for key in [k for k in _mutexes if k[0] == path]:
            del _mutexes[key]
        _generation += 1
    if fd is not None:
        os.close(fd)


def offset(slot: int) -> int:
    """The byte of ``slot``'s lock in the lock database file."""
    return _BASE + slot


def flock_struct(kind: int, offset: int) -> bytes:
    # struct flock on Linux: short l_type, short l_whence, off_t l_start, off_t l_len, pid_t l_pid
    return struct.pack("hhqqi4x", kind, os.SEEK_SET, offset, 1, 0)


def _fd(path: str) -> int:
    key = (_pid, path)
    fd = _fds.get(key)
    if fd is None:
        with _registry_lock:
            fd = _fds.get(key)
            if fd is None:
                fd = _fds[key] = _open_present(path)
    return fd


def present(path: str) -> None:
    """Open this process's descriptor on ``path`` (creating the file) if it is not open yet,
    holding the shared presence lock from now until :func:`forget`."""
    _fd(path)


def _open_present(path: str) -> int:
    shared = flock_struct(fcntl.F_RDLCK, _BASE + PRESENCE)
    while True:
        # Created as SQLite creates the database's -wal (sidecar.py): the file is the lock
        # database too, and every user of the database must be able to open it.
        fd = sidecar.open_or_create(path, path.removesuffix("-locks"))
        try:
            # Waits only while a last closer holds it exclusively, deleting the file.
            fcntl.fcntl(fd, _F_OFD_SETLKW, shared)
            if _same_file(fd, path):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # deleted after we opened it: nothing of ours is locked there


def _same_file(fd: int, path: str) -> bool:
    try:
        now = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino)


def presence_offset() -> int:
    """The byte every process with the file open holds a shared lock on."""
    return _BASE + PRESENCE


def sole_user(path: str) -> bool:
    """Whether no other process has ``path`` open through this module, proved by taking the
    presence lock exclusively (never waits); it then stays exclusive until :func:`forget`.
    ``False`` when this process does not have the file open either.

    The shared lock is released first: of two processes closing at once, each converting its
    own shared lock would find the other's and both would give up; released first, at least
    one of them gets it.  Only once nothing of this process uses the file any more.
    """
    with _registry_lock:
        fd = _fds.get((_pid, path))
    if fd is None:
        return False
    fcntl.fcntl(fd, _F_OFD_SETLK, flock_struct(fcntl.F_UNLCK, _BASE + PRESENCE))
    try:
        fcntl.fcntl(fd, _F_OFD_SETLK, flock_struct(fcntl.F_WRLCK, _BASE + PRESENCE))
    except OSError:
        return False
    return _same_file(fd, path)


def held_elsewhere(path: str, slot: int) -> bool:
    """Whether another process holds ``slot``'s lock exclusively (never this process's own:
    its threads share one open file description).  One system call; nothing is taken, and
    nothing opened: ``True`` (cannot tell) if this process has no descriptor on ``path``."""
    fd = _fds.get((_pid, path))
    if fd is None:
        return True
    request = _probes.get(slot)
    if request is None:  # packed once per slot: asked after every merge-lock release
        request = _probes[slot] = flock_struct(fcntl.F_RDLCK, _BASE + slot)
    probe = fcntl.fcntl(fd, F_OFD_GETLK, request)
    return struct.unpack("hhqqi4x", probe)[0] != fcntl.F_UNLCK


_probes: dict[int, bytes] = {}  # slot -> packed F_OFD_GETLK request


def _try(fd: int, request: bytes) -> bool:
    """Take a lock if nothing conflicts; never waits."""
    try:
        fcntl.fcntl(fd, _F_OFD_SETLK, request)
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


class HeldByThisThreadError(OperationalError):
    """The lock is held by the calling thread itself (through another connection), so
    waiting for it could never end: SQLite's answer to the same situation."""

    def __init__(self) -> None:
        super().__init__("database is locked")
        self.sqlite_errorcode = 5  # SQLITE_BUSY, as the stdlib reports it
        self.sqlite_errorname = "SQLITE_BUSY"


class ByteLock:
    """An exclusive lock on one byte of ``path``, shared by threads and processes alike.

    ``spin``: seconds one waiter at a time (across processes) keeps trying before it sleeps
    (:meth:`acquire`); 0 sleeps at once.
    """

    def __init__(self, path: str, slot: int, *, spin: float = 0.0) -> None:
        self.path = path
        self.offset = _BASE + slot
        self._key = (path, slot)
        with _registry_lock:
            self._mutex = _mutexes.setdefault(self._key, threading.Lock())
        # Taken and released on every lock operation: pack the arguments once.
        self._exclusive = flock_struct(fcntl.F_WRLCK, self.offset)
        self._shared = flock_struct(fcntl.F_RDLCK, self.offset)
        self._unlock = flock_struct(fcntl.F_UNLCK, self.offset)
        # Spinning pays only where the holder runs on another CPU meanwhile.
        self._spin = spin if spin and len(os.sched_getaffinity(0)) > 1 else 0.0
        # How long this process holds the lock, a moving average: holds as long as a spin
        # (a commit that fsyncs) would mostly outlast it, and two processes would pass the
        # lock between them while the others sleep.
        self._hold = 0.0
        self._acquired_at = 0.0
        self._spinner = flock_struct(fcntl.F_WRLCK, _BASE + SPINNER)
        self._spinner_done = flock_struct(fcntl.F_UNLCK, _BASE + SPINNER)
        self._fd_generation = -1
        self._fd = -1
        # Whether the last acquisition may have waited asleep (for another thread, or in the
        # kernel; a lock that does not spin always may): read by the thread that holds the
        # lock, right after taking it.
        self.slept = False

    def _descriptor(self) -> int:
        # First use, or a forked child: its own open file description.  A generation counter
        # bumped at fork, not os.getpid() (a system call, four per lock operation pair).
        if self._fd_generation != _generation:
            self._fd, self._fd_generation = _fd(self.path), _generation
        return self._fd

    def acquire(self, *, shared: bool = False) -> None:
        """Block in the kernel until granted.  ``shared`` locks exclude only exclusive ones
        across processes; within a process every holder is exclusive (the descriptor is shared).
        """
        me = threading.get_ident()
        if _holders.get(self._key) == me:
            raise HeldByThisThreadError
        slept = not self._mutex.acquire(blocking=False)
        if slept:
            self._mutex.acquire()
        try:
            fd = self._descriptor()
            if shared or not self._spin or self._hold * 3 > self._spin or not self._spun(fd):
                fcntl.fcntl(fd, _F_OFD_SETLKW, self._shared if shared else self._exclusive)
                slept = True
        except BaseException:
            self._mutex.release()
            raise
        self.slept = slept
        _holders[self._key] = me
        if self._spin:  # the one lock that spins keeps the time: every other is on hot paths
            self._acquired_at = time.perf_counter()

    def _spun(self, fd: int) -> bool:
        """Whether the lock was taken without sleeping: it was free, or this process is the
        one waiter that spins and it came free within ``spin`` seconds.

        A waiter that sleeps starts running again only some tens of microseconds after the
        release, and then runs its whole transaction with cold caches: with short
        transactions, the lock would sit free, or its holder run slow, for most of each
        hand-off.  The spinner takes the lock the moment it is released, on another CPU, while
        the releaser goes on with what it does outside the lock.  One spinner at most, so the
        others still sleep in the kernel, and each spin is bounded: no wait is longer, and
        none gains a poll interval (docs/architecture.md, "Locks and waiting").
        """
        if _try(fd, self._exclusive):
            return True
        if not _try(fd, self._spinner):
            return False
        try:
            deadline = time.perf_counter() + self._spin
            while time.perf_counter() < deadline:
                if _try(fd, self._exclusive):
                    return True
            return False
        finally:
            fcntl.fcntl(fd, _F_OFD_SETLK, self._spinner_done)

    def acquire_in_process(self) -> None:
        """Exclude this process's other threads only: for reading, in one SQLite read
        transaction, what the lock guards while other processes may write it."""
        if _holders.get(self._key) == threading.get_ident():
            raise HeldByThisThreadError
        self._mutex.acquire()

    def release_in_process(self) -> None:
        self._mutex.release()

    @property
    def key(self) -> tuple[str, int]:
        return self._key

    def held(self) -> bool:
        """Whether any thread of any process holds it exclusively now.  One system call."""
        return self._key in _holders or held_elsewhere(*self._key)

    def held_by_this_thread(self) -> bool:
        return _holders.get(self._key) == threading.get_ident()

    def try_acquire(self) -> bool:
        """Take the lock exclusively if nobody holds it; never waits."""
        if not self._mutex.acquire(blocking=False):
            return False
        try:
            fcntl.fcntl(self._descriptor(), _F_OFD_SETLK, self._exclusive)
        except OSError:
            self._mutex.release()
            return False
        _holders[self._key] = threading.get_ident()
        if self._spin:
            self._acquired_at = time.perf_counter()
        return True

    def release(self) -> None:
        if self._spin:
            self._hold += (time.perf_counter() - self._acquired_at - self._hold) * 0.25
        _holders.pop(self._key, None)
        try:
            fcntl.fcntl(self._descriptor(), _F_OFD_SETLK, self._unlock)
        finally:
            self._mutex.release()

    def __enter__(self) -> ByteLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
