"""The per-process journal ``<db>-journal<PID>`` (architecture.md, "Journals, group commit
and commit markers").

Each writer process appends, for every transaction that asks to commit, a record holding what
the merge needs (changeset, row images, page read set, ...), so the process holding the merge
lock can apply it for its owner (group commit) and recovery can tell what a dead process left.

Format (version 1), all integers little-endian:

- header, 64 bytes: magic ``SQLCJNL\\0``, version u16, 0 u16, pid u32, process start time u64,
  the first 16 bytes of sha256(absolute database path), zero padding, then crc32 of the bytes
  before it in the last 4 bytes.
- records: kind u8, txn_id u64, payload length u32, payload, crc32 of all of those.  Kind 1
  (ready) carries an encoded :class:`~.merge.Pending`; kind 2 (page) an overlay page that
  spilled out of memory: page number u32, then the page.

Values are encoded by a small tagged codec (never pickle): N null, I i64, F f64, T utf-8 text,
B bytes, L list; lengths are u32.  The journal only has to survive a process crash (after a
machine crash every owner is dead and nothing in it was acknowledged), so it is never fsynced.
It is truncated to its header whenever its process has no transaction waiting to commit, and
deleted when the process's last connection to the database closes.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import OperationalError
from ..locking.processes import process_start_time
from . import sidecar

MAGIC = b"SQLCJNL\0"
VERSION = 1
HEADER_SIZE = 64
READY = 1
PAGE = 2

_HEAD = struct.Struct("<8sHHIQ16s")
_REC = struct.Struct("<BQI")
_CRC = struct.Struct("<I")


class JournalError(Exception):
    """A journal file that cannot be trusted: ``reason`` says why (corrupt, truncated,
    foreign, future-version)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def db_id(db_path: str) -> bytes:
    return hashlib.sha256(os.path.abspath(db_path).encode()).digest()[:16]


def path_for(db_path: str, pid: int) -> str:
    return f"{db_path}-journal{pid}"


# -- the value codec ------------------------------------------------------------------------


def encode(value: Any) -> bytes:
    out = bytearray()
    put_value(out, value)
    return bytes(out)


def iter_values(data: bytes) -> Iterator[Any]:
    """The values of back-to-back encodings, decoded one at a time."""
    buf = memoryview(data)
    at = 0
    while at < len(buf):
        value, at = _get(buf, at)
        yield value


def put_value(out: bytearray, v: Any) -> None:
    """Append one encoded value to ``out`` (values appended in a row: see iter_values)."""
    if v is None:
        out += b"N"
    elif isinstance(v, int):
        out += b"I" + struct.pack("<q", int(v))
    elif isinstance(v, float):
        out += b"F" + struct.pack("<d", v)
    elif isinstance(v, str):
        data = v.encode("utf-8", "surrogatepass")
        out += b"T" + struct.pack("<I", len(data)) + data
    elif isinstance(v, (bytes, bytearray, memoryview)):
        data = bytes(v)
        out += b"B" + struct.pack("<I", len(data)) + data
    elif isinstance(v, (list, tuple, frozenset, set)):
        items = sorted(v) if isinstance(v, (set, frozenset)) else v
        out += b"L" + struct.pack("<I", len(items))
        for item in items:
            put_value(out, item)
    else:
        raise TypeError(f"cannot journal a {type(v).__name__}")


def decode(data: bytes) -> Any:
    value, end = _get(memoryview(data), 0)
    if end != len(data):
        raise ValueError("trailing bytes after the value")
    return value


def _get(buf: memoryview, at: int) -> tuple[Any, int]:
    tag = bytes(buf[at : at + 1])
    at += 1
    if tag == b"N":
        return None, at
    if tag == b"I":
        return struct.unpack_from("<q", buf, at)[0], at + 8
    if tag == b"F":
        return struct.unpack_from("<d", buf, at)[0], at + 8
    if tag in (b"T", b"B"):
        (n,) = struct.unpack_from("<I", buf, at)
        at += 4
        if at + n > len(buf):
            raise ValueError("value runs past the end")
        data = bytes(buf[at : at + n])
        return (data.decode("utf-8", "surrogatepass") if tag == b"T" else data), at + n
    if tag == b"L":
        (n,) = struct.unpack_from("<I", buf, at)
        at += 4
        items = []
        for _ in range(n):
            item, at = _get(buf, at)
            items.append(item)
        return items, at
    raise ValueError(f"unknown tag {tag!r}")


# -- the file -------------------------------------------------------------------------------


def _header(db_path: str, pid: int, start_time: int) -> bytes:
    head = _HEAD.pack(MAGIC, VERSION, 0, pid, start_time, db_id(db_path))
    head = head.ljust(HEADER_SIZE - 4, b"\0")
    return head + _CRC.pack(zlib.crc32(head))


def _record(kind: int, txn_id: int, payload: bytes) -> bytes:
    body = _REC.pack(kind, txn_id, len(payload)) + payload
    return body + _CRC.pack(zlib.crc32(body))


@dataclass(frozen=True)
class Header:
    version: int
    pid: int
    start_time: int
    db_id: bytes


def parse_header(data: bytes, db_path: str) -> Header:
    if not MAGIC.startswith(data[:8]):  # a short file that starts like one is truncated
        raise JournalError("foreign", "not a sqlite-concurrent journal")
    if len(data) < HEADER_SIZE:
        raise JournalError("truncated", f"{len(data)}-byte header")
    (crc,) = _CRC.unpack_from(data, HEADER_SIZE - 4)
    if zlib.crc32(data[: HEADER_SIZE - 4]) != crc:
        raise JournalError("corrupt", "header checksum mismatch")
    _, version, _, pid, start_time, ident = _HEAD.unpack_from(data)
    if version > VERSION:
        raise JournalError("future-version", f"version {version}, this library reads {VERSION}")
    if ident != db_id(db_path):
        raise JournalError("foreign", "written for another database")
    return Header(version, pid, start_time, ident)


def records(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """``(offset, kind, txn_id, payload)`` of each record after the header.

    :raises JournalError: a record is cut short or fails its checksum.
    """
    at = HEADER_SIZE
    while at < len(data):
        if at + _REC.size > len(data):
            raise JournalError("truncated", f"record header at {at}")
        kind, txn_id, n = _REC.unpack_from(data, at)
        end = at + _REC.size + n
        if end + 4 > len(data):
            raise JournalError("truncated", f"record at {at}")
        (crc,) = _CRC.unpack_from(data, end)
        if zlib.crc32(data[at:end]) != crc:
            raise JournalError("corrupt", f"record at {at} fails its checksum")
        yield at, kind, txn_id, bytes(data[at + _REC.size : end])
        at = end + 4


def read_record(path: str, offset: int, length: int, txn_id: int) -> bytes:
    """The payload of one record another process wrote, checked.

    :raises JournalError: it is not there, or not intact.
    """
    try:
        fd = sidecar.open_existing(path, os.O_RDONLY)
    except (OSError, OperationalError) as e:
        raise JournalError("missing", str(e)) from e
    try:
        data = os.pread(fd, length, offset)
    except OSError as e:
        raise JournalError("missing", str(e)) from e
    finally:
        os.close(fd)
    if len(data) != length:
        raise JournalError("truncated", f"record at {offset}")
    kind, found, n = _REC.unpack_from(data)
    (crc,) = _CRC.unpack_from(data, length - 4)
    if (
        kind != READY
        or found != txn_id
        or _REC.size + n + 4 != length
        or zlib.crc32(data[:-4]) != crc
    ):
        raise JournalError("corrupt", f"record at {offset} is not transaction {txn_id}'s")
    return data[_REC.size : _REC.size + n]


def _forked() -> None:
    # Another thread may have held it at fork(); it would never be released in the child.
    Journal._registry = threading.Lock()


class Journal:
    """This process's journal for one database, shared by its connections and threads.

    A forked child has its own (its pid names the file); the parent's, inherited, is never
    touched there.
    """

    _instances: ClassVar[dict[tuple[int, str], Journal]] = {}
    _registry: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, db_path: str, start_time: int) -> None:
        self.db_path = db_path
        self.pid = os.getpid()
        self.path = path_for(db_path, self.pid)
        self._start_time = start_time
        self._lock = threading.Lock()
        self._fd = -1
        self._size = 0
        self._waiting: set[int] = set()
        self.users = 0

    @classmethod
    def for_db(cls, db_path: str, start_time: int) -> Journal:
        key = (os.getpid(), db_path)
        with cls._registry:
            journal = cls._instances.get(key)
            if journal is None:
                journal = cls._instances[key] = cls(db_path, start_time)
            journal.users += 1
            return journal

    def release(self) -> None:
        """A connection closed; the last one deletes the file."""
        with Journal._registry:
            self.users -= 1
            if self.users:
                return
            Journal._instances.pop((self.pid, self.db_path), None)
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)  # our own file: no SQLite lock lives on it
                self._fd = -1
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)

    def _open(self) -> int:
        if self._fd < 0:
            fd = self._create()
            os.pwrite(fd, _header(self.db_path, self.pid, self._start_time), 0)
            self._fd, self._size = fd, HEADER_SIZE
        return self._fd

    def _create(self) -> int:
        try:
            return sidecar.create(self.path, self.db_path)
        except FileExistsError:
            pass
        # Left by a process that had this pid before us and died: nobody's now.  A link is
        # refused, never written through.
        sidecar.refuse_link(self.path)
        dispose(self.db_path, self.pid)
        try:
            return sidecar.create(self.path, self.db_path)
        except FileExistsError:
            raise OperationalError(
                f"{self.path} exists and could not be removed: a journal left by a dead "
                "process with this pid; move it away"
            ) from None

    def _append(self, txn_id: int, record: bytes) -> int:
        """Write ``record`` at the end; ``txn_id`` keeps the file from shrinking meanwhile."""
        with self._lock:
            try:
                fd = self._open()
                offset = self._size
                # A full disk can first show as a short write, then as ENOSPC.
                if os.pwrite(fd, record, offset) != len(record):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            except OSError as e:
                e.filename = self.path
                raise
            self._size += len(record)
            self._waiting.add(txn_id)
        return offset

    def write_ready(self, txn_id: int, payload: bytes) -> tuple[int, int]:
        """Append a transaction's merge record; returns its (offset, length)."""
        record = _record(READY, txn_id, payload)
        return self._append(txn_id, record), len(record)

    def spill_page(self, txn_id: int, pgno: int, data: bytes) -> int:
        """Keep an overlay page here; returns where its bytes are (for read_page)."""
        record = _record(PAGE, txn_id, struct.pack("<I", pgno) + data)
        return self._append(txn_id, record) + _REC.size + 4

    def read_page(self, offset: int, size: int) -> bytes:
        return os.pread(self._fd, size, offset)

    def done(self, txn_id: int) -> None:
        """Its outcome is known: once nothing waits, the journal shrinks back to its header."""
        with self._lock:
            self._waiting.discard(txn_id)
            if not self._waiting and self._fd >= 0 and self._size > HEADER_SIZE:
                os.ftruncate(self._fd, HEADER_SIZE)
                self._size = HEADER_SIZE


os.register_at_fork(after_in_child=_forked)


# -- recovery -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Disposal:
    """What became of a dead process's journal."""

    path: str
    pid: int
    action: str  # "deleted", "quarantined", or "left" (it could not be read or moved)
    reason: str = ""  # why it was quarantined
    txn_ids: tuple[int, ...] = ()  # transactions it held merge records for
    quarantined_as: str = ""


def orphans(db_path: str) -> list[int]:
    """Pids of journals beside ``db_path`` whose process is gone (or is another process now)."""
    directory = os.path.dirname(os.path.abspath(db_path))
    prefix = os.path.basename(db_path) + "-journal"
    found = []
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    for name in names:
        suffix = name[len(prefix) :] if name.startswith(prefix) else ""
        if not suffix.isdigit():
            continue
        pid = int(suffix)
        if pid == os.getpid():
            continue
        start = process_start_time(pid)
        if start is None:
            found.append(pid)
            continue
        try:
            header = parse_header(_read(os.path.join(directory, name), HEADER_SIZE), db_path)
        except (OSError, JournalError, OperationalError):
            continue  # a live process may be writing it right now
        if header.start_time not in (0, start):
            found.append(pid)  # the pid was reused: its writer is gone
    return found


def _read(path: str, size: int = -1) -> bytes:
    """The file's bytes (the first ``size`` of them), never through a link."""
    with os.fdopen(sidecar.open_existing(path, os.O_RDONLY), "rb") as f:
        return f.read(size)


def dispose(db_path: str, pid: int) -> Disposal | None:
    """Delete a dead process's journal, or set it aside if it cannot be trusted.

    Nothing in it is ever applied: its transactions were not acknowledged, and those a merger
    applied for it carry a commit marker.  A journal that is corrupt, truncated, written for
    another database or by a newer version is renamed ``*.quarantined-<time>`` and reported.
    """
    path = path_for(db_path, pid)
    try:
        data = _read(path)
    except FileNotFoundError:
        return None
    except (OSError, OperationalError) as e:
        return Disposal(path, pid, "left", reason=str(e))
    try:
        if data:  # empty: created, then the process died before writing the header
            header = parse_header(data, db_path)
            if header.pid != pid:
                raise JournalError("foreign", f"written by pid {header.pid}")
        txn_ids = tuple(t for _, kind, t, _ in records(data) if kind == READY) if data else ()
    except JournalError as e:
        target = f"{path}.quarantined-{int(time.time())}"
        try:
            os.replace(path, target)
        except OSError:
            return Disposal(path, pid, "left", reason=e.reason)
        return Disposal(path, pid, "quarantined", reason=str(e), quarantined_as=target)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return Disposal(path, pid, "deleted", txn_ids=txn_ids)
