"""The overlay VFS: a transaction's private, writable view of one snapshot.

A transaction's connection opens the database through this VFS.  Page reads come from the
transaction's own overlay (pages SQLite spilled), else from its pinned snapshot; writes go to the
overlay and never reach the real file.  Locks always succeed: nobody else sees this view.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import random
import threading
from typing import Any

import apsw

from .snapshot import Snapshot

VFS_NAME = "sqlite-concurrent-overlay"

# Fact (data loss, architecture.md, "The overlay VFS"): SQLite switches to WAL mode whenever a -wal
# file exists, then checkpoints into (and deletes) whatever it finds.  The overlay must never see
# the real ones.
_HIDDEN_SUFFIXES = ("-wal", "-shm", "-journal")

# Unique page-1 change counters.  A new value at each transaction start makes SQLite discard its
# page cache (pager_reset after comparing bytes 24..39), so every page read comes through us.
# Even, and two apart: a transaction connection that commits by itself (the RELEASE of the
# savepoint that began its transaction) leaves its cached counter one higher, and the next
# overlay's must differ from that too, or SQLite keeps the pages of the older snapshot.
_counters = itertools.count(2 * random.randrange(1, 1 << 30), 2)
_counter_lock = threading.Lock()


def _next_counter() -> int:
    with _counter_lock:
        return next(_counters) & 0xFFFFFFFF or 2


MEMORY_BUDGET = 8 * 2**20  # overlay bytes kept in memory; past it pages spill to the journal


class Overlay:
    """One transaction's private pages on top of a snapshot, plus the pages it read.

    At most ``MEMORY_BUDGET`` bytes of pages stay in memory; older ones spill to the process's
    journal (``spill``), so a transaction that writes more than SQLite's page cache holds
    still runs in bounded memory.
    """

    def __init__(self, snapshot: Snapshot, spill: Any = None) -> None:
        self.snapshot = snapshot
        self.page_size = snapshot.page_size
        self.size_pages = snapshot.page_count
        self.pages: dict[int, bytes] = {}
        self.spilled: dict[int, int] = {}  # page number -> offset of its bytes in the journal
        self._spill = spill  # (journal, txn_id)
        self._max_pages = max(16, MEMORY_BUDGET // self.page_size)
        # Set while SQLite rolls the transaction back: the pages it writes back are discarded
        # with the overlay right after, so writing them is wasted (a whole table, at times).
        self.discarding = False
        self.read_set: set[int] = set()
        counter = _next_counter().to_bytes(4, "big")
        self._page1_patch = (counter, snapshot.page_count.to_bytes(4, "big"))
        self._page1: bytes | None = None

    def page(self, pgno: int) -> bytes:
        data = self.pages.get(pgno)
        if data is not None:
            return data
        offset = self.spilled.get(pgno)
        if offset is not None:
            journal, _ = self._spill
            return journal.read_page(offset, self.page_size)
        self.read_set.add(pgno)
        if pgno > self.snapshot.page_count:
            return bytes(self.page_size)
        if pgno == 1:
            return self.page1()
        return self.snapshot.read_page(pgno)

    def page1(self) -> bytes:
        """Page 1 as the snapshot has it, patched; read once.  SQLite reads it (or its change
        counter) at least twice a transaction, and the schema cookie comes from it too."""
        page1 = self._page1
        if page1 is None:
            page1 = self._page1 = self._patch_page1(self.snapshot.read_page(1))
        return page1

    def _patch_page1(self, data: bytes) -> bytes:
        counter, page_count = self._page1_patch
        buf = bytearray(data)
        # File format 1 (legacy rollback) in bytes 18/19: left at 2 (WAL) the open fails.
        buf[18] = 1
        buf[19] = 1
        buf[24:28] = counter  # file change counter
        buf[28:32] = page_count  # in-header database size
        buf[92:96] = counter  # version-valid-for: makes the in-header size trustworthy
        return bytes(buf)

    def write(self, data: bytes, offset: int) -> None:
        if self.discarding:
            return
        size = self.page_size
        pgno, within = divmod(offset, size)
        pgno += 1
        if within == 0 and len(data) == size:
            page = bytes(data)
        else:
            buf = bytearray(self.page(pgno))
            buf[within : within + len(data)] = data
            page = bytes(buf)
        self.spilled.pop(pgno, None)
        self.pages.pop(pgno, None)  # re-inserted last: the dict's order is the spill order
        self.pages[pgno] = page
        self.size_pages = max(self.size_pages, pgno)
        if len(self.pages) > self._max_pages and self._spill is not None:
            journal, txn_id = self._spill
            old = next(iter(self.pages))
            self.spilled[old] = journal.spill_page(txn_id, old, self.pages.pop(old))

    def read(self, amount: int, offset: int) -> bytes:
        size = self.page_size
        pgno, within = divmod(offset, size)
        if within == 0 and amount == size and pgno < self.size_pages:
            return self.page(pgno + 1)  # the usual read: one whole page, no copies
        end = min(offset + amount, self.size_pages * size)
        out = bytearray()
        pos = offset
        while pos < end:
            pgno, within = divmod(pos, size)
            take = min(size - within, end - pos)
            out += self.page(pgno + 1)[within : within + take]
            pos += take
        return bytes(out)

    def truncate(self, size: int) -> None:
        if self.discarding:
            return
        pages = size // self.page_size
        for pgno in [p for p in self.pages if p > pages]:
            del self.pages[pgno]
        for pgno in [p for p in self.spilled if p > pages]:
            del self.spilled[pgno]
        self.size_pages = pages

    def release(self) -> None:
        """The transaction is over: its spilled pages are garbage."""
        if self.spilled and self._spill is not None:
            journal, txn_id = self._spill
            journal.done(txn_id)
        self.pages.clear()
        self.spilled.clear()


def _outside_transaction() -> apsw.IOError:
    return apsw.IOError("sqlite-concurrent: database accessed outside a transaction")


class OverlayFile:
    """SQLite file methods for the main database of a transaction's connection.

    Deliberately not an ``apsw.VFSFile``: inheriting the default VFS's file would open (and lock)
    the real database file.
    """

    def __init__(self, slot: Slot) -> None:
        self._slot = slot

    def _overlay(self) -> Overlay:
        overlay = self._slot.overlay
        if overlay is None:
            raise _outside_transaction()
        return overlay

    def xRead(self, amount: int, offset: int) -> bytes:  # noqa: N802 - APSW's method names
        overlay = self._slot.overlay  # as _overlay(), one call fewer: pages are read a lot
        if overlay is None:
            raise _outside_transaction()
        return overlay.read(amount, offset)

    def xWrite(self, data: bytes, offset: int) -> None:  # noqa: N802
        self._overlay().write(data, offset)

    def xTruncate(self, newsize: int) -> None:  # noqa: N802
        self._overlay().truncate(newsize)

    def xFileSize(self) -> int:  # noqa: N802
        overlay = self._slot.overlay
        if overlay is None:
            return 0
        return overlay.size_pages * overlay.page_size

    def xSync(self, flags: int) -> None:  # noqa: N802
        pass

    def xLock(self, level: int) -> None:  # noqa: N802
        pass

    def xUnlock(self, level: int) -> None:  # noqa: N802
        pass

    def xCheckReservedLock(self) -> bool:  # noqa: N802
        return False

    def xFileControl(self, op: int, ptr: int) -> bool:  # noqa: N802
        return False

    def xSectorSize(self) -> int:  # noqa: N802
        return 4096

    def xDeviceCharacteristics(self) -> int:  # noqa: N802
        return 0

    def xClose(self) -> None:  # noqa: N802
        pass


class Slot:
    """Where a transaction connection's file finds the overlay of its current transaction."""

    def __init__(self) -> None:
        self.overlay: Overlay | None = None


class OverlayVFS(apsw.VFS):
    """Routes ``file:...?sc_slot=N`` opens to the registered slot's overlay."""

    def __init__(self) -> None:
        self.slots: dict[int, Slot] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        super().__init__(VFS_NAME, base="")

    def new_slot(self) -> tuple[int, Slot]:
        with self._lock:
            slot_id = next(self._ids)
            slot = self.slots[slot_id] = Slot()
        return slot_id, slot

    def forked(self) -> None:
        self._lock = threading.Lock()

    def drop_slot(self, slot_id: int) -> None:
        with self._lock:
            self.slots.pop(slot_id, None)

    def xOpen(self, name: Any, flags: list[int]) -> Any:  # noqa: N802
        if isinstance(name, apsw.URIFilename) and flags[0] & apsw.SQLITE_OPEN_MAIN_DB:
            slot_id = name.uri_int("sc_slot", 0)
            slot = self.slots.get(slot_id)
            if slot is None:
                raise apsw.CantOpenError(f"sqlite-concurrent: no overlay slot {slot_id}")
            flags[1] = flags[0]
            return OverlayFile(slot)
        # Temporary files and statement journals are private anyway: the default VFS is fine.
        return apsw.VFSFile("", name, flags)

    def xAccess(self, pathname: str, flags: int) -> bool:  # noqa: N802
        if pathname.endswith(_HIDDEN_SUFFIXES):
            return False
        return super().xAccess(pathname, flags)

    def xDelete(self, filename: str, syncdir: bool) -> None:  # noqa: N802
        if filename.endswith(_HIDDEN_SUFFIXES):
            return
        super().xDelete(filename, syncdir)


_vfs: OverlayVFS | None = None
_vfs_lock = threading.Lock()


def _forked() -> None:
    # Threads do not survive fork(): a lock one of them held would stay held in the child.
    global _vfs_lock, _counter_lock
    _vfs_lock = threading.Lock()
    _counter_lock = threading.Lock()
    if _vfs is not None:
        _vfs.forked()


os.register_at_fork(after_in_child=_forked)


def _close_at_exit() -> None:
    """Close the connections still open on the overlay while the interpreter can run their
    Python file objects.  One left in a reference cycle (an exception's traceback keeps
    frames alive) would otherwise close in the final garbage collection, after APSW's module
    state is gone, and the process would crash instead of exiting."""
    for conn in apsw.connections():
        if conn.open_vfs == VFS_NAME:
            with contextlib.suppress(apsw.Error):
                conn.close()


def vfs() -> OverlayVFS:
    """The interpreter's overlay VFS, registered with SQLite on first use.

    A forked child inherits both the registration and this object, so one instance serves all.
    """
    global _vfs
    with _vfs_lock:
        if _vfs is None:
            _vfs = OverlayVFS()
            atexit.register(_close_at_exit)
        return _vfs
