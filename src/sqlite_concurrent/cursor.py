"""The DB-API cursor: rows of a SELECT are fetched lazily, as in the stdlib."""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import apsw

from . import adaptation
from .errors import OperationalError, ProgrammingError, translate

if TYPE_CHECKING:
    from .dbapi import Connection


NO_ROWS: Iterator[tuple[Any, ...]] = iter(())  # exhausted for good: cursors share it
_described: dict[tuple[Any, int], tuple[tuple[Any, ...], ...]] = {}


def describe(
    raw: Sequence[tuple[Any, ...]] | None, detect_types: int = 0
) -> tuple[tuple[Any, ...], ...] | None:
    if not raw:
        return None
    # The same query describes itself the same way every time it runs.
    key = (raw, detect_types)
    found = _described.get(key)
    if found is None:
        if len(_described) > 1024:
            _described.clear()
        found = _described[key] = tuple(
            (adaptation.column_name(d[0], detect_types), None, None, None, None, None, None)
            for d in raw
        )
    return found


class Cursor:
    """A DB-API cursor.  Rows of a SELECT are fetched lazily, as in the stdlib."""

    arraysize = 1

    def __init__(self, connection: Connection) -> None:
        _check_unlocked(self)
        # Duck-typed: importing dbapi here (a cycle) cost 14 us on every cursor.
        if not hasattr(connection, "_execute"):
            raise TypeError(f"argument 1 must be a Connection, not {type(connection).__name__}")
        self.connection = connection
        self.description: tuple[tuple[Any, ...], ...] | None = None
        self._rowcount = -1
        self._rows_pending = False  # an executemany of DML that returns rows (``rowcount``)
        self._statement: object | None = None  # as recorded to be run again (rerun.py)
        self._lastrowid: int | None = None
        self._inserted_rows: list[tuple[str, int]] = []
        self.row_factory: Callable[[Cursor, tuple[Any, ...]], Any] | None = connection.row_factory
        self._rows: Iterator[tuple[Any, ...]] = iter(())
        self._converters: list[Callable[[bytes], Any] | None] | None = None
        self._on_txn_conn = False
        self._locked = False
        self._closed = False

    def _check(self) -> None:
        if getattr(self, "_closed", None) is None:
            raise ProgrammingError("Base Cursor.__init__ not called.")
        if self._closed:
            raise ProgrammingError("Cannot operate on a closed cursor.")
        _check_unlocked(self)
        self.connection._check()

    @property
    def rowcount(self) -> int:
        """As in the stdlib.  Read inside a transaction, the transaction can no longer be
        run again instead of conflicting (:mod:`.rerun`)."""
        if self.connection._txns.script is not None:
            self.connection._txns.replays.observe()
        # DML that returns rows (RETURNING, PRAGMA count_changes) has not finished, for the
        # stdlib, until its last row is fetched; after ``executemany``, never.
        rows = self._rows
        if self._rows_pending or (isinstance(rows, PendingRows) and rows.left):
            return 0
        return self._rowcount

    @property
    def lastrowid(self) -> int | None:
        """As in the stdlib.  Reading it pins the rowids this cursor's INSERT chose: they are
        then kept at merge instead of being reassigned (architecture.md, "Rowids nobody saw"), and
        the transaction can no longer be run again (:mod:`.rerun`)."""
        if self.connection._txns.script is not None:
            self.connection._txns.replays.observe()
        if self._inserted_rows:
            txn = self.connection._txns.txn
            if txn is not None:
                txn.rebase.observe_rows(self._inserted_rows)
            self._inserted_rows = []
        return self._lastrowid

    def execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] = ()) -> Cursor:
        self._check()
        self._locked = True
        try:
            self.connection._execute(self, sql, parameters, many=False)
        finally:
            self._locked = False
        return self

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any]) -> Cursor:
        self._check()
        self._locked = True
        try:
            self.connection._execute(self, sql, seq_of_parameters, many=True)
        finally:
            self._locked = False
        return self

    def executescript(self, sql_script: str) -> Cursor:
        """As in the stdlib: commit what is open, then run the script's statements."""
        self._check()
        self._locked = True
        try:
            self.connection.executescript(sql_script, cursor=self)
        finally:
            self._locked = False
        return self

    def _reset(self) -> None:
        """Forget the previous statement: a new one is about to run."""
        self.description = None
        self._rowcount = -1
        self._rows_pending = False
        self._converters = None
        self._rows = NO_ROWS
        self._on_txn_conn = False
        self._statement = None

    def _set_rows(self, rows: Iterator[tuple[Any, ...]], on_txn_conn: bool) -> None:
        self._rows = rows
        self._on_txn_conn = on_txn_conn
        if on_txn_conn:
            self.connection._txns.cursors.add(self)

    def _materialise(self) -> None:
        self._rows = iter(list(self._rows))

    def _detach_from_txn(self) -> None:
        """Keep the remaining rows: the transaction connection is about to roll back."""
        if self._on_txn_conn:
            self._rows = iter(list(self._rows))
            self._on_txn_conn = False

    def _next(self) -> Any:
        connection = self.connection
        if connection._txns.script is not None:  # even no row is something seen (rerun.py)
            connection._txns.replays.observe()
        try:
            row = next(self._rows)
        except StopIteration:
            return None
        except apsw.Error as e:
            raise translate(e) from e
        except UnicodeDecodeError as e:
            raise undecodable(e, self.description) from e
        text_factory = connection.text_factory
        if self._converters is not None or text_factory is not str:
            # As the stdlib's: converters and text factories must not use this cursor; its
            # row factory may.
            self._locked = True
            try:
                row = self._convert(row, text_factory)
            finally:
                self._locked = False
        factory = self.row_factory
        return factory(self, row) if factory is not None else row

    def _convert(self, row: tuple[Any, ...], text_factory: Callable[[bytes], Any]) -> Any:
        if self._converters is not None:
            return adaptation.convert_row(row, self._converters, text_factory)
        return tuple(text_factory(v.encode()) if isinstance(v, str) else v for v in row)

    def fetchone(self) -> Any:
        self._check()
        return self._next()

    def fetchmany(self, size: int | None = None) -> list[Any]:
        self._check()
        n = self.arraysize if size is None else size
        out = []
        for _ in range(n):
            row = self._next()
            if row is None:
                break
            out.append(row)
        return out

    def fetchall(self) -> list[Any]:
        self._check()
        out = []
        while (row := self._next()) is not None:
            out.append(row)
        return out

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        self._check()
        row = self._next()
        if row is None:
            raise StopIteration
        return row

    def close(self) -> None:
        _check_unlocked(self)
        if getattr(self, "_closed", None) is None:
            raise ProgrammingError("Base Cursor.__init__ not called.")
        # Not the full check: closing is quiet in a fork() child, as the connection's is.
        self.connection._check_open()
        self.connection._check_thread()
        self._rows = iter(())
        self._closed = True

    def setinputsizes(self, sizes: Any) -> None:
        pass

    def setoutputsize(self, size: Any, column: Any = None) -> None:
        pass


def undecodable(
    error: UnicodeDecodeError, description: Sequence[Sequence[Any]] | None
) -> OperationalError:
    """The stdlib's error for a TEXT value that is not UTF-8, naming the column and the text.

    SQLite's text reaches us already decoded, and the decoder does not say which column it
    was decoding: with several columns the message names them all.
    """
    names = [str(d[0]) for d in description or ()]
    column = f"'{names[0]}'" if len(names) == 1 else "of " + ", ".join(f"'{n}'" for n in names)
    # As the stdlib formats it: the raw bytes read as ASCII, the rest replaced.
    raw = error.object if isinstance(error.object, bytes) else bytes(error.object)
    text = raw.split(b"\0", 1)[0].decode("ascii", "replace")
    return OperationalError(f"Could not decode to UTF-8 column {column} with text '{text}'")


def _check_unlocked(cursor: Cursor) -> None:
    # The stdlib's guard against a cursor used while it runs a statement or converts a row
    # (from a parameter generator, an adapter or a converter): the statement would be reset
    # under it.
    if getattr(cursor, "_locked", False):
        raise ProgrammingError("Recursive use of cursors not allowed.")


class PendingRows:
    """The rows of DML that returns rows, already run to completion: until the last one is
    fetched the stdlib's statement has not finished, and its ``rowcount`` shows 0."""

    def __init__(self, rows: Iterator[tuple[Any, ...]]) -> None:
        self._rows = rows
        self.left = operator.length_hint(rows)  # a list's iterator: no copy

    def __iter__(self) -> PendingRows:
        return self

    def __next__(self) -> tuple[Any, ...]:
        row = next(self._rows)
        self.left -= 1
        return row
