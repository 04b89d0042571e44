"""Pinning a read snapshot of the database and reading its pages as of that snapshot.

A stock APSW connection holds a read transaction for the snapshot's lifetime; SQLite's read-mark
protocol then keeps checkpoints from backfilling, and the WAL from restarting over, any frame the
snapshot can see.  We locate pages ourselves through the WAL index in ``-shm``
(https://sqlite.org/walformat.html, "The WAL-Index Format"), reading with ``os.pread`` on
descriptors that are opened once per process and closed only when the process lets go of the
database (architecture.md, "Snapshots, and the locks a close drops", "lost locks"; see
:mod:`.holding`).
"""

from __future__ import annotations

import bisect
import contextlib
import os
import struct
import threading
from typing import ClassVar, NamedTuple

import apsw

from . import sidecar

# WalIndexHdr: iVersion, unused, iChange, isInit, bigEndCksum, szPage, mxFrame, nPage,
# aFrameCksum[2], aSalt[2], aCksum[2]; two copies at offsets 0 and 48, native byte order.
_HDR = struct.Struct("=IIIBBHII2I2I2I")
_HDR_SIZE = 48
_CKPT_NBACKFILL = struct.Struct("=I")  # WalCkptInfo.nBackfill at offset 96
_INDEX_HEADER_BYTES = 136  # 2 * WalIndexHdr + WalCkptInfo, the start of hash block 0
_BLOCK_BYTES = 32768
_BLOCK0_PAGES = 4062  # (16384 - 136) / 4
_BLOCK_PAGES = 4096
_WAL_HEADER = 32
_FRAME_HEADER = 24


class SnapshotError(Exception):
    """The WAL index could not be read consistently."""


_HEADER_WORDS = struct.Struct("=10I")  # the 40 checksummed bytes of a WalIndexHdr


def _wal_checksum(header: bytes) -> tuple[int, int]:
    """walChecksumBytes of a header's first 40 bytes, in native byte order, as
    walIndexWriteHdr computes it (unrolled: it runs on every pin that sees a new header)."""
    w0, w1, w2, w3, w4, w5, w6, w7, w8, w9 = _HEADER_WORDS.unpack_from(header)
    m = 0xFFFFFFFF
    s1 = w0 & m
    s2 = (w1 + s1) & m
    s1 = (s1 + w2 + s2) & m
    s2 = (s2 + w3 + s1) & m
    s1 = (s1 + w4 + s2) & m
    s2 = (s2 + w5 + s1) & m
    s1 = (s1 + w6 + s2) & m
    s2 = (s2 + w7 + s1) & m
    s1 = (s1 + w8 + s2) & m
    s2 = (s2 + w9 + s1) & m
    return s1, s2


class WalHeader(NamedTuple):  # built on every pin: a tuple is cheaper than a frozen dataclass
    raw: bytes
    change: int
    page_size: int  # 0 means "empty WAL, take it from the database header"
    max_frame: int
    n_page: int
    salt: tuple[int, int]
    backfilled: int


_verified: set[bytes] = set()  # headers whose checksum already matched; bounded below


def read_wal_header(shm_fd: int) -> WalHeader | None:
    """The current WAL-index header, or ``None`` while a writer is half-way through updating it."""
    buf = os.pread(shm_fd, _INDEX_HEADER_BYTES, 0)
    if len(buf) < _INDEX_HEADER_BYTES:
        return None
    first = _valid_header(buf)
    if first is None:
        return None
    f = _HDR.unpack(first)
    sz = f[5]
    page_size = 65536 if sz == 1 else sz
    (backfilled,) = _CKPT_NBACKFILL.unpack_from(buf, 96)
    return WalHeader(first, f[2], page_size, f[6], f[7], (f[10], f[11]), backfilled)


def _valid_header(buf: bytes) -> bytes | None:
    """The header's first copy from ``buf`` (both copies, at least), if it is whole and valid."""
    if len(buf) < 2 * _HDR_SIZE:
        return None
    first, second = buf[:_HDR_SIZE], buf[_HDR_SIZE : 2 * _HDR_SIZE]
    if first != second:
        return None
    if first not in _verified:
        f = _HDR.unpack(first)
        if not f[3] or _wal_checksum(first) != (f[12], f[13]):  # isInit, aCksum
            return None
        if len(_verified) > 64:
            _verified.clear()
        _verified.add(first)
    return first


def _forked() -> None:
    # Another thread may have held it at fork(); it would never be released in the child.
    WalFiles._lock = threading.Lock()


class WalFiles:
    """Per-process descriptors on the database, ``-wal`` and ``-shm``.

    Closed only once no SQLite connection of this process relies on POSIX locks on these files
    (closing any descriptor drops them all, architecture.md, "Snapshots, and the locks a close
    drops"): see :meth:`forget`.
    """

    _by_key: ClassVar[dict[tuple[int, str], WalFiles]] = {}
    _lock = threading.Lock()

    def __init__(self, path: str) -> None:
        self.path = path
        self.db = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        st = os.fstat(self.db)
        self.identity = (st.st_dev, st.st_ino)
        self.wal = -1
        self.shm = -1
        self.index: _WalIndexCache | None = None  # of the current WAL generation
        # Descriptors of -wal/-shm generations that were deleted and recreated; closed with
        # the others, never while connections rely on locks on these files.
        self.retired: list[int] = []

    @classmethod
    def for_path(cls, path: str) -> WalFiles:
        """The descriptors on the database now at ``path`` as this process last opened it."""
        key = (os.getpid(), path)
        files = cls._by_key.get(key)
        if files is None:
            with cls._lock:
                files = cls._by_key.get(key)
                if files is None:
                    files = cls(path)
                    files._refresh()
                    cls._by_key[key] = files
        return files

    @classmethod
    def for_database(cls, path: str, identity: tuple[int, int]) -> WalFiles:
        """Descriptors on the database file ``identity`` (device, inode), which a connection of
        this process has just opened and read at ``path``.

        A file deleted and created again at the same path (test suites do it) is another
        database: it gets descriptors of its own, and the old file's stay with it.
        """
        key = (os.getpid(), path)
        with cls._lock:
            files = cls._by_key.get(key)
            if files is None or files.identity != identity:
                # The old file's connections keep the old descriptors until the process lets go.
                files = cls._by_key[key] = cls(path)
            files._refresh()
        return files

    @classmethod
    def identities(cls) -> set[tuple[int, int]]:
        """(device, inode) of every file this process's descriptors here are open on."""
        # No lock: a copy of the values is atomic, and audit hooks call this from anywhere.
        found = set()
        for files in list(cls._by_key.values()):
            for fd in (files.db, files.wal, files.shm):
                with contextlib.suppress(OSError):  # closed meanwhile
                    st = os.fstat(fd)
                    found.add((st.st_dev, st.st_ino))
        return found

    @classmethod
    def forget(cls, path: str, files: WalFiles | None = None) -> None:
        """Close this process's descriptors for ``path`` (or just ``files``, one generation of
        them) and forget them: the next use opens new ones.

        Only when no SQLite connection of this process has these files open: closing a
        descriptor drops every POSIX lock the process holds on the file (architecture.md,
        "Snapshots, and the locks a close drops").
        """
        key = (os.getpid(), path)
        with cls._lock:
            found = cls._by_key.get(key)
            if found is not None and (files is None or found is files):
                del cls._by_key[key]
            closing = files if files is not None else found
            if closing is not None:
                closing._close()

    def _close(self) -> None:
        # Under ``_lock``: a descriptor closed twice could be a number meanwhile reused for
        # another file, whose POSIX locks that second close would drop.
        fds = (self.db, self.wal, self.shm, *self.retired)
        self.db = self.wal = self.shm = -1
        self.retired = []
        for fd in fds:
            if fd >= 0:
                os.close(fd)

    def refresh(self) -> None:
        """Reopen ``-wal``/``-shm`` if they were deleted (last connection closed) and recreated.

        Call it while a connection of this process is open on the database and has read (so
        the files exist): SQLite deletes them only when the last connection of all closes.
        """
        with WalFiles._lock:  # two threads must not both retire (and later close) one descriptor
            self._refresh()

    def _refresh(self) -> None:
        for attr, suffix in (("wal", "-wal"), ("shm", "-shm")):
            fd = getattr(self, attr)
            if fd >= 0 and os.fstat(fd).st_nlink > 0:
                continue
            if fd >= 0:
                self.retired.append(fd)
            # Never through a link, as SQLite opened them (sidecar.py).
            setattr(self, attr, sidecar.open_existing(self.path + suffix, os.O_RDONLY))


os.register_at_fork(after_in_child=_forked)


class _WalIndexCache:
    """Page number -> frames, for one WAL generation (salt), extended as frames are committed.

    Frames up to a committed mxFrame never change until the WAL restarts, which changes the salt,
    so one process can share this map among all its snapshots of the same generation.
    """

    def __init__(self, salt: tuple[int, int]) -> None:
        self.salt = salt
        self.indexed = 0
        self.frames: dict[int, list[int]] = {}
        self.lock = threading.Lock()

    def extend(self, shm_fd: int, max_frame: int) -> None:
        with self.lock:
            for frame, pgno in frame_pages(shm_fd, self.indexed + 1, max_frame):
                self.frames.setdefault(pgno, []).append(frame)
            self.indexed = max(self.indexed, max_frame)


def frame_pages(shm_fd: int, first: int, last: int) -> list[tuple[int, int]]:
    """(frame, page number) for frames ``first..last``, from the WAL index's aPgno arrays."""
    out: list[tuple[int, int]] = []
    frame = first
    while frame <= last:
        if frame <= _BLOCK0_PAGES:
            block_first, start, capacity = 1, _INDEX_HEADER_BYTES, _BLOCK0_PAGES
        else:
            block = (frame - _BLOCK0_PAGES - 1) // _BLOCK_PAGES + 1
            block_first = _BLOCK0_PAGES + (block - 1) * _BLOCK_PAGES + 1
            start, capacity = block * _BLOCK_BYTES, _BLOCK_PAGES
        stop = min(last, block_first + capacity - 1)
        count = stop - frame + 1
        data = os.pread(shm_fd, count * 4, start + (frame - block_first) * 4)
        if len(data) != count * 4:
            raise SnapshotError("WAL index is shorter than its header claims")
        out.extend(zip(range(frame, stop + 1), struct.unpack(f"={count}I", data), strict=True))
        frame = stop + 1
    return out


def pages_changed_since(path: str, since: WalHeader) -> set[int] | None:
    """Pages written by commits after the snapshot ``since``; ``None`` if that is unknowable
    (the caller must then assume everything changed).

    Call with the database's write lock held, so the header cannot move, and with the snapshot
    still pinned: then a WAL that restarted since restarted once, and every frame it holds
    came after the snapshot.  (A reader on any read-mark but 0 keeps the WAL from restarting;
    one on mark 0, which SQLite gives only when every frame is backfilled, keeps any frame
    from being backfilled, and a restart needs them all backfilled.)
    """
    files = WalFiles.for_path(path)
    for _ in range(1000):
        now = read_wal_header(files.shm)
        if now is not None:
            break
    else:
        raise SnapshotError("could not read the WAL index header")
    first = since.max_frame + 1
    if now.salt != since.salt:
        if since.backfilled < since.max_frame:
            return None  # not pinned on mark 0: the caller broke the contract above
        first = 1
    return {pgno for _, pgno in frame_pages(files.shm, first, now.max_frame)}


def _cache_for(files: WalFiles, salt: tuple[int, int]) -> _WalIndexCache:
    cache = files.index
    if cache is None or cache.salt != salt:
        with WalFiles._lock:
            cache = files.index
            if cache is None or cache.salt != salt:
                cache = files.index = _WalIndexCache(salt)
    return cache


class Snapshot:
    """A pinned, immutable view of the database's pages.

    :param files: this process's descriptors on the database (``WalFiles.for_database``).
    :param reader: a stock APSW connection on the database, used only for pinning.
    """

    def __init__(self, files: WalFiles, reader: apsw.Connection, max_retries: int = 1000) -> None:
        self.path = files.path
        self._reader = reader
        self._files = files
        self.header: WalHeader | None = None
        self._pin(max_retries)

    def _pin(self, max_retries: int) -> None:
        # The descriptors need no check that -wal/-shm are still the live files: SQLite deletes
        # them only with the last connection of all, and the process's anchor connection on
        # this database file (see :mod:`.holding`) stays open while any connection of ours is.
        files = self._files
        for _ in range(max_retries):
            before = _valid_header(os.pread(files.shm, 2 * _HDR_SIZE, 0))
            if before is None:
                # Uninitialised or mid-update index: a read on the stock connection makes SQLite
                # build it (walIndexRecover); then look again.
                self._reader.execute("SELECT 1 FROM sqlite_schema LIMIT 1").fetchall()
                continue
            self._reader.execute("BEGIN")
            try:
                # Any read starts the read transaction; this one touches only the header.
                self._reader.execute("PRAGMA schema_version").fetchall()
            except BaseException:
                self._reader.execute("ROLLBACK")
                raise
            after = read_wal_header(files.shm)
            # Fact (race): the header must be the same before and after the read transaction
            # starts, or we cannot know which snapshot SQLite gave the reader.
            if after is not None and after.raw == before:
                self.header = after
                break
            self._reader.execute("ROLLBACK")
        else:
            raise SnapshotError("could not pin a snapshot: the WAL index kept changing")
        hdr = self.header
        # Fact (fully checkpointed WAL): when every frame is backfilled the reader may hold
        # read-mark 0 and the WAL can restart under it; the database file alone is then correct.
        self._use_wal = hdr.max_frame > 0 and hdr.backfilled < hdr.max_frame
        if self._use_wal:
            self._cache = _cache_for(files, hdr.salt)
            if self._cache.indexed < hdr.max_frame:
                self._cache.extend(files.shm, hdr.max_frame)
        if hdr.page_size:
            self.page_size = hdr.page_size
        else:
            raw = os.pread(files.db, 2, 16)
            size = int.from_bytes(raw, "big")
            self.page_size = 65536 if size == 1 else size
        if hdr.n_page:
            self.page_count = hdr.n_page
        else:
            self.page_count = os.fstat(files.db).st_size // self.page_size

    @property
    def max_frame(self) -> int:
        assert self.header is not None
        return self.header.max_frame

    def frame_for(self, pgno: int) -> int:
        """The latest frame at or before this snapshot holding ``pgno``, or 0 for the db file."""
        if not self._use_wal:
            return 0
        frames = self._cache.frames.get(pgno)
        if not frames:
            return 0
        mx = self.max_frame
        if frames[-1] <= mx:
            return frames[-1]
        i = bisect.bisect_right(frames, mx)
        return frames[i - 1] if i else 0

    def read_page(self, pgno: int) -> bytes:
        """Page ``pgno`` (1-based) as of this snapshot; empty bytes past the end."""
        if pgno > self.page_count:
            return b""
        page_size = self.page_size
        frame = self.frame_for(pgno)
        if frame:
            at = _WAL_HEADER + (frame - 1) * (page_size + _FRAME_HEADER) + _FRAME_HEADER
            data = os.pread(self._files.wal, page_size, at)
        else:
            data = os.pread(self._files.db, page_size, (pgno - 1) * page_size)
        if len(data) != page_size:
            raise SnapshotError(f"short read of page {pgno}")
        return data

    def release(self) -> None:
        """End the read transaction; the snapshot's frames may then be checkpointed."""
        if self._reader.in_transaction:
            self._reader.execute("ROLLBACK")
