"""``Connection.blobopen``: incremental BLOB I/O, as in the stdlib.

On a private database the handle is SQLite's own.  On a shared one a handle cannot stay open:
reads must come from the current snapshot and writes must go into a transaction (its changeset
carries them, the session module records blob writes).  So each operation opens SQLite's
handle on the connection that would run a statement now, and outside a transaction a write is
committed at once, as SQLite's autocommit does.
"""

from __future__ import annotations

import os
import sys
import weakref
from typing import TYPE_CHECKING, Any

import apsw

from .errors import OperationalError, ProgrammingError, translate

if TYPE_CHECKING:
    from .dbapi import Connection

_INT_MAX = 2**31 - 1


class Blob:
    """What ``Connection.blobopen`` returns; only connections make them."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Blob:
        raise TypeError(f"cannot create '{cls.__module__}.{cls.__qualname__}' instances")

    @classmethod
    def _open_on(
        cls, conn: Connection, table: str, column: str, row: int, readonly: bool, name: str
    ) -> Blob:
        blob: Blob = object.__new__(cls)
        blob._setup(conn, table, column, row, readonly, name)
        return blob

    def _setup(
        self, conn: Connection, table: str, column: str, row: int, readonly: bool, name: str
    ) -> None:
        self._conn = conn
        self._where = (name, table, column, row)
        self._readonly = readonly
        self._offset = 0
        self._closed = False
        self._expired = False
        self._handle: apsw.Blob | None = None
        if conn._private is not None:
            self._handle = self._open(conn._private, not readonly)
            self._length = self._handle.length()
        else:
            with self._reading() as blob:
                self._length = blob.length()
            conn._open_blobs.add(self)

    def _open(self, conn: apsw.Connection, writeable: bool) -> apsw.Blob:
        name, table, column, row = self._where
        try:
            try:
                return conn.blob_open(name, table, column, row, writeable)
            except apsw.SQLError:
                # blob_open looks the table up in the schema this SQLite connection last
                # loaded, which another of ours may have changed since; a statement reloads it.
                self._conn._schemas.reload(conn, name)
                return conn.blob_open(name, table, column, row, writeable)
        except apsw.Error as e:
            raise translate(e) from e

    def _reading(self) -> apsw.Blob:
        return self._open(self._conn._router.current_connection(self._where[0]), False)

    def _check(self) -> None:
        if self._closed:
            raise ProgrammingError("Cannot operate on a closed blob.")
        self._conn._check()

    # -- the file-like part ----------------------------------------------------------------

    def read(self, length: int = -1) -> bytes:
        self._check()
        if length < 0 or length > self._length - self._offset:
            length = self._length - self._offset
        data = self._read_at(self._offset, length)
        self._offset += len(data)
        return data

    def write(self, data: Any) -> None:
        self._check()
        data = bytes(memoryview(data))
        if len(data) > self._length - self._offset:
            raise ValueError("data longer than blob length")
        self._write_at(self._offset, data)
        self._offset += len(data)

    def tell(self) -> int:
        self._check()
        return self._offset

    def seek(self, offset: int, origin: int = os.SEEK_SET) -> None:
        self._check()
        if origin == os.SEEK_SET:
            base = 0
        elif origin == os.SEEK_CUR:
            base = self._offset
        elif origin == os.SEEK_END:
            base = self._length
        else:
            raise ValueError("'origin' should be os.SEEK_SET, os.SEEK_CUR, or os.SEEK_END")
        if base + offset > _INT_MAX:
            raise OverflowError("seek offset results in overflow")
        if not 0 <= base + offset <= self._length:
            raise ValueError("offset out of blob range")
        self._offset = base + offset

    def close(self) -> None:
        self._conn._check()
        if self._handle is not None:
            self._handle.close()
        self._closed = True

    def __len__(self) -> int:
        self._check()
        return self._length

    def __enter__(self) -> Blob:
        self._check()
        return self

    def __exit__(self, *exc: object) -> None:
        # Unlike close(), which may be repeated, as in the stdlib.
        self._check()
        self.close()

    # -- the sequence part -----------------------------------------------------------------

    def _index(self, index: Any) -> int:
        if not hasattr(index, "__index__"):
            raise TypeError("Blob indices must be integers")
        i = index.__index__()
        if abs(i) > sys.maxsize:
            raise IndexError("cannot fit 'int' into an index-sized integer")
        if i < 0:
            i += self._length
        if not 0 <= i < self._length:
            raise IndexError("Blob index out of range")
        return i

    def __getitem__(self, index: Any) -> Any:
        self._check()
        if isinstance(index, slice):
            start, stop, step = index.indices(self._length)
            if stop <= start:
                return b""
            data = self._read_at(start, stop - start)
            return data[::step]
        try:
            i = self._index(index)
        except OverflowError:
            raise IndexError("cannot fit 'int' into an index-sized integer") from None
        return self._read_at(i, 1)[0]

    def __setitem__(self, index: Any, value: Any) -> None:
        self._check()
        if isinstance(index, slice):
            if index.step == 0:
                raise ValueError("slice step cannot be zero")
            start, stop, step = index.indices(self._length)
            data = memoryview(value)
            if not data.c_contiguous:
                raise BufferError("underlying buffer is not C-contiguous")
            count = len(range(start, stop, step))
            if data.nbytes != count:
                raise IndexError("Blob slice assignment is wrong size")
            if count == 0:
                return
            if step == 1:
                self._write_at(start, data.tobytes())
                return
            current = bytearray(self._read_at(start, stop - start))
            current[::step] = data.tobytes()
            self._write_at(start, bytes(current))
            return
        i = self._index(index)
        if not isinstance(value, int):
            raise TypeError(f"'{type(value).__name__}' object cannot be interpreted as an integer")
        if not 0 <= value <= 255:
            raise ValueError("byte must be in range(0, 256)")
        self._write_at(i, bytes([value]))

    def __delitem__(self, index: Any) -> None:
        raise TypeError("Blob doesn't support item deletion")

    __iter__ = None  # indexable, but not a sequence: ``in`` and iteration are TypeErrors

    # -- SQLite ----------------------------------------------------------------------------

    def expire(self) -> None:
        """The row was changed or deleted: reads and writes fail from now on, as with SQLite's
        expired handle, which is empty once one has failed."""
        self._expired = True

    def _aborted(self) -> OperationalError:
        self._length = 0
        return OperationalError("query aborted")

    def _read_at(self, offset: int, length: int) -> bytes:
        if self._expired:
            raise self._aborted()
        try:
            if self._handle is not None:
                self._handle.seek(offset)
                return self._handle.read(length)
            blob = self._reading()
            try:
                blob.seek(offset)
                return blob.read(length)
            finally:
                blob.close()
        except apsw.AbortError as e:
            raise self._aborted() from e
        except apsw.Error as e:
            raise translate(e) from e

    def _write_at(self, offset: int, data: bytes) -> None:
        if self._readonly:
            raise OperationalError("attempt to write a readonly blob")
        if self._expired:
            raise self._aborted()
        try:
            if self._handle is not None:
                self._handle.seek(offset)
                self._handle.write(data)
                return
            self._conn._router.blob_write(self._where, offset, data)
        except apsw.AbortError as e:
            raise self._aborted() from e
        except apsw.ReadOnlyError as e:
            raise OperationalError("attempt to write a readonly blob") from e
        except apsw.Error as e:
            raise translate(e) from e


class OpenBlobs:
    """The open blobs of a connection to a shared database, so that a statement changing the
    row of one expires it, as SQLite expires the handle the stdlib's blob keeps open (ours
    open a handle for each read or write)."""

    def __init__(self) -> None:
        self._blobs: weakref.WeakSet[Blob] = weakref.WeakSet()

    def add(self, blob: Blob) -> None:
        self._blobs.add(blob)

    def __bool__(self) -> bool:
        # The set's references, live or not yet collected: a WeakSet's own len() runs in
        # Python, and every statement on the merger asks.
        return bool(self._blobs.data)

    def row_written(self, db: str, table: str, rowid: int) -> None:
        if not self._blobs.data:  # on every row a statement writes: the usual case first
            return
        for blob in list(self._blobs):
            name, blob_table, _column, row = blob._where
            if row == rowid and name.lower() == db.lower() and blob_table.lower() == table.lower():
                blob.expire()
                self._blobs.discard(blob)
