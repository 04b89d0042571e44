"""Running one statement for a connection, as the stdlib's would run it.

The connection chooses the SQLite connection a statement runs on (:mod:`.dbapi`); this runs it
there and leaves on the cursor what the stdlib's would show: the description (read before the
first step, and remembered per statement while the schema stays), the rows (run to the end at
once where the stdlib would, and for DML), ``rowcount``, ``lastrowid`` and the connection's
counters.  It turns what SQLite and our locks raise into the stdlib's errors, and it refuses a
second statement in one ``execute`` before the first runs, as the stdlib does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import apsw

from . import adaptation, crashpoints, description, statements
from .commit import merge
from .cursor import NO_ROWS, Cursor, PendingRows, describe, undecodable
from .engine.authorizer import Denied
from .engine.transaction import WriteTransaction
from .errors import ConflictError, LockTimeoutError, OperationalError, ProgrammingError, translate
from .locking import locks
from .process import exiting

if TYPE_CHECKING:
    from .dbapi import Connection

_PLAIN_DML: tuple[int, Any] = (-1, None)  # a statement shape: no columns


class StatementRunner:
    """Runs the statements of one connection (``owner``) and remembers how they were
    described."""

    def __init__(self, owner: Connection, denied: Denied) -> None:
        self._owner = exiting.weak_proxy(owner)  # no reference cycle (see exiting.py)
        # SQL text -> (schema cookie, description) of single statements the transaction
        # connection ran, and DML without RETURNING the merger ran (see ``run``).
        self.statement_shapes: dict[str, tuple[int, Any]] = {}
        self.plain_dml: set[str] = set()
        self.last_changes = 0  # rows the last statement run changed, triggers' included
        self._denied = denied  # the connection's: why its authorizers refused a statement
        self._columns = description.Columns(denied)

    def run(
        self,
        cursor: Cursor,
        conn: apsw.Connection,
        sql: str,
        parameters: Any,
        many: bool,
        on_txn_conn: bool,
        kind: str,
    ) -> None:
        """Run one statement on ``conn`` (the transaction's own connection when
        ``on_txn_conn``) and leave its results on ``cursor``, as the stdlib's would be."""
        owner = self._owner
        if sql in self.plain_dml and self._plain_dml_fits(conn, many):
            self._run_plain_dml(cursor, conn, sql, parameters)
            return
        if many and kind != "dml":
            raise ProgrammingError("executemany() can only execute DML statements.")
        txn = owner._txns.txn if on_txn_conn else None
        trace = _StatementTrace(owner, sql, txn)
        self._denied.reason = None
        # DML runs to completion at once, as in the stdlib; so does anything on the merger,
        # whose lock is released when this returns.
        materialise = kind in ("dml", "pragma") or (
            conn is owner._merger and owner._private is None
        )
        # PRAGMA count_changes is on only while the application's DML runs: our own
        # statements on these connections must not return rows.
        counting = (
            owner._count_changes
            and kind in ("dml", "other")  # "other": DML after WITH, as the stdlib tells them
            and conn is not owner._reader
            and owner._private is None
        )
        before = None
        try:
            conn = self._before(cursor, conn, sql, kind, txn)
            # As the stdlib's ``total_changes``: what triggers and foreign-key actions changed
            # too (SQLite's count on the connection that ran it).
            before = conn.total_changes()
            if counting:
                self._count_changes(conn, True)
                # Prepared afresh: a cached statement shows its columns as they were without
                # the count until its first step prepares it again.
                trace.can_cache = False
            known = None if counting else self._known_shape(txn, conn, sql, many)
            if known is not None:
                # This SQL ran here before for this schema: one statement (the trace refused a
                # second then), described as recorded.  Nothing else asks for the trace at the
                # row level without a rebase pending, so it is skipped: about 2 us a statement.
                rows: Iterator[tuple[Any, ...]] = conn.cursor().execute(sql, parameters)
                if materialise:
                    rows = self._to_completion(rows, cursor, conn, kind)
            else:
                rows = self._traced(
                    trace, cursor, conn, parameters, many, materialise, on_txn_conn, kind
                )
            if txn is not None:
                txn.fresh = False
                if txn.level.locks_rows:
                    txn.locking.after_statement()
                crashpoints.reach("execute.statement")
        except _RUN_ERRORS as e:
            raise self._error(e, trace, conn, on_txn_conn)  # noqa: B904 - its own cause
        finally:
            owner._user_on_merger = False
            owner._statement_traced = None
            if counting:
                self._count_changes(conn, False)
            if before is not None:  # what it did before failing, too (an executemany)
                self.last_changes = conn.total_changes() - before
                owner._total_changes += self.last_changes
                if kind == "dml" or self.last_changes:
                    owner._changes = conn.changes()
                if conn is not owner._reader or owner._private is not None:
                    # The connection's value moves with executemany too; the cursor's does
                    # not.
                    owner._last_insert_rowid = conn.last_insert_rowid()
        if kind == "pragma" and is_count_changes(sql):
            owner._count_changes = bool(conn.pragma("count_changes"))
        self._describe(cursor, trace, known, conn, many, kind)
        self._after(cursor, conn, sql, rows, many, materialise, on_txn_conn)
        if kind == "dml" and cursor.description:
            # Until its last row is fetched (``Cursor.rowcount``); after ``executemany``, for
            # good.
            if many:
                cursor._rows_pending = True
            else:
                cursor._rows = PendingRows(cursor._rows)

    def _plain_dml_fits(self, conn: apsw.Connection, many: bool) -> bool:
        """Whether a statement in :attr:`plain_dml` may run on ``conn`` by
        :meth:`_run_plain_dml`: one run, on the merger, nothing tracing or counting it."""
        owner = self._owner
        return (
            conn is owner._merger
            and not many
            and owner._trace is None
            and not owner._count_changes
            and owner._private is None
        )

    def _run_plain_dml(
        self, cursor: Cursor, conn: apsw.Connection, sql: str, parameters: Any
    ) -> None:
        """:meth:`run` for a statement of :attr:`plain_dml` (DML without RETURNING that ran on
        the merger before as one statement, so still one, with no columns and no rows), where
        :meth:`_plain_dml_fits`: what nearly every direct transaction runs, under the merge
        lock, so only what such a statement needs."""
        owner = self._owner
        self._denied.reason = None
        owner._user_on_merger = True
        before = None
        try:
            merge.triggers_on(conn)
            conn.set_last_insert_rowid(owner._last_insert_rowid)
            before = conn.total_changes()
            for _ in conn.cursor().execute(sql, parameters):
                pass
            cursor._rowcount = conn.changes()
        except _RUN_ERRORS as e:
            raise self._error(e, _StatementTrace(owner, sql, None), conn, False)  # noqa: B904
        finally:
            owner._user_on_merger = False
            owner._statement_traced = None
            if before is not None:
                self.last_changes = changed = conn.total_changes() - before
                owner._total_changes += changed
                owner._changes = conn.changes()
                owner._last_insert_rowid = rowid = conn.last_insert_rowid()
        cursor.description = None
        cursor._lastrowid = rowid
        cursor._rows = NO_ROWS
        cursor._on_txn_conn = False

    def _after(
        self,
        cursor: Cursor,
        conn: apsw.Connection,
        sql: str,
        rows: Iterator[tuple[Any, ...]],
        many: bool,
        listed: bool,
        on_txn_conn: bool,
    ) -> None:
        """What a statement that ran leaves: the rows on the cursor (``listed``: already in a
        list), the connection's counters and caches, and a commit if it ended the
        transaction."""
        owner = self._owner
        if conn is owner._merger and owner._private is None and statements.may_change_schema(sql):
            owner._schemas.changed()
        if not many:
            cursor._lastrowid = owner._last_insert_rowid
        # Rows already in a list outlive the transaction connection: nothing to detach.
        cursor._set_rows(rows, on_txn_conn and not listed and not many)
        if conn is owner._reader and not listed and owner._private is None:
            owner._reader_cursors.add(cursor)
        if on_txn_conn and owner._txns.txn is not None and conn.get_autocommit():
            # RELEASE of the outermost savepoint ended the transaction on the connection:
            # that is a commit, as it would be in SQLite.
            cursor._detach_from_txn()
            owner._txns.commit()

    def _before(
        self,
        cursor: Cursor,
        conn: apsw.Connection,
        sql: str,
        kind: str,
        txn: WriteTransaction | None,
    ) -> apsw.Connection:
        """Make ``conn`` ready for the statement; returns the connection it runs on."""
        owner = self._owner
        if txn is not None:
            txn.ensure_pinned()
            conn = (
                txn.connection
            )  # ensure_pinned may have replaced it (``TransactionConnection.pinned``)
            auto = owner._txn_connection.auto_rowid_table(txn, sql) if kind == "dml" else None
            cursor._inserted_rows = txn.rebase.start_statement(auto)
        owner._user_on_merger = conn is owner._merger
        if owner._user_on_merger:
            merge.triggers_on(conn)
        if owner._private is None:
            # SQLite keeps it per connection; the stdlib's one connection has one value
            # (the merger's may be a commit marker's rowid), which SQL's last_insert_rowid()
            # reads on the reader too.
            conn.set_last_insert_rowid(owner._last_insert_rowid)
        return conn

    def _known_shape(
        self, txn: WriteTransaction | None, conn: apsw.Connection, sql: str, many: bool
    ) -> tuple[int, Any] | None:
        """How ``sql`` was described when it last ran here, if it can run untraced."""
        owner = self._owner
        if many or owner._trace is not None:
            return None
        if txn is not None:
            if not txn.level.locks_rows or txn.rebase.pending or owner.detect_types:
                return None
            known = self.statement_shapes.get(sql)
            if known is not None and known[0] != txn.schema_version:
                return None
            return known
        if sql in self.plain_dml and conn is owner._merger:
            # DML without RETURNING that ran here before as one statement: whatever the
            # schema now, it still is one and still has no columns.
            return _PLAIN_DML
        return None

    def _traced(
        self,
        trace: _StatementTrace,
        cursor: Cursor,
        conn: apsw.Connection,
        parameters: Any,
        many: bool,
        materialise: bool,
        on_txn_conn: bool,
        kind: str,
    ) -> Iterator[tuple[Any, ...]]:
        """Run the statement under ``trace``, preparing it again while the locks it needs
        call for (:class:`.locks.Reprepare`, :class:`.locks.Restart`)."""
        sql, txn = trace.sql, trace.txn
        if many and not isinstance(parameters, Remaining):
            parameters = Remaining(parameters)  # a retry goes on where it stopped
        for _ in range(100):
            trace.raw_description.clear()
            self._owner._table_sets.collecting.clear()
            acur = conn.cursor()
            acur.exec_trace = trace
            try:
                if many:
                    return self._step_many(cursor, conn, acur, sql, parameters, trace.can_cache)
                rows: Iterator[tuple[Any, ...]] = acur.execute(
                    sql, parameters, can_cache=trace.can_cache
                )
                raw = trace.raw_description
                if raw and not on_txn_conn and trace.can_cache:
                    raw[0] = self._columns.after_step(acur, conn, sql, parameters, raw[0])
                if materialise:  # under the trace: it refuses a second statement
                    rows = self._to_completion(rows, cursor, conn, kind)
                return rows
            except locks.Reprepare:
                trace.can_cache = False  # the authorizer only runs when SQLite prepares
            except locks.Restart:
                assert txn is not None
                txn.restart()
            finally:
                acur.exec_trace = None
        raise OperationalError("could not pin a snapshot that is current for the locks")

    def _error(
        self, e: BaseException, trace: _StatementTrace, conn: apsw.Connection, on_txn_conn: bool
    ) -> BaseException:
        """What a statement that failed with ``e`` raises, after what the failure calls for."""
        owner = self._owner
        owner._user_on_merger = False
        if isinstance(e, apsw.ExecTraceAbort):
            if trace.several:
                return _caused(ProgrammingError("You can only execute one statement at a time."), e)
            return e
        if isinstance(e, apsw.AuthError):
            reason, self._denied.reason = self._denied.reason, None
            if on_txn_conn and reason:
                return _caused(NeedsExclusive(reason), e)
            if conn is owner._reader and reason is not None and owner._private is None:
                return e  # our read-only guard: the caller runs it as an exclusive operation
            return _caused(translate(e), e)
        if isinstance(e, ConflictError):
            # Doomed (stale snapshot, or a deadlock victim): free its locks for the others now.
            if owner._txns.txn is not None and on_txn_conn:
                owner._txns.abort(e)
            return e
        if isinstance(e, LockTimeoutError):
            # Row locks are taken after the statement ran; it cannot be undone alone.
            if owner._txns.txn is not None and on_txn_conn and not trace.table_level:
                owner._txns.abort(e)
            return e
        if isinstance(e, apsw.Error):
            self._after_txn_error(on_txn_conn)
            return _caused(translate(e), e)
        if isinstance(e, KeyError):
            message = f"You did not supply a value for binding parameter {e.args[0]}."
            return _caused(ProgrammingError(message), e)
        if isinstance(e, TypeError):
            return _caused(adaptation.binding_error(e), e)
        if isinstance(e, OverflowError):
            return _caused(OverflowError("Python int too large to convert to SQLite INTEGER"), e)
        assert isinstance(e, UnicodeDecodeError)  # a statement run to completion here
        raw = trace.raw_description
        return _caused(undecodable(e, raw[0] if raw else None), e)

    def _describe(
        self,
        cursor: Cursor,
        trace: _StatementTrace,
        known: tuple[int, Any] | None,
        conn: apsw.Connection,
        many: bool,
        kind: str,
    ) -> None:
        """Set ``cursor.description`` (and converters), and remember how the statement was
        described for its next run (``_known_shape``)."""
        owner = self._owner
        if known is not None:
            cursor.description = known[1]
            return
        raw = trace.raw_description[0] if trace.raw_description else None
        cursor.description = describe(raw, owner.detect_types)
        if raw and owner.detect_types:
            cursor._converters = adaptation.column_converters(raw, owner.detect_types)
        txn = trace.txn
        if kind == "pragma":
            # A pragma such as full_column_names renames the columns of other statements
            # (count_changes gives DML some).
            self.statement_shapes.clear()
            self.plain_dml.clear()
        elif txn is not None and not many and not owner.detect_types and owner._trace is None:
            if len(self.statement_shapes) > 4096:
                self.statement_shapes.clear()
            self.statement_shapes[trace.sql] = (txn.schema_version, cursor.description)
        elif conn is owner._merger and kind == "dml" and not many and raw == ():
            if len(self.plain_dml) > 4096:
                self.plain_dml.clear()
            self.plain_dml.add(trace.sql)

    def _count_changes(self, conn: apsw.Connection, on: bool) -> None:
        with self._denied.muting():  # ours, not the application's: nobody vets it
            conn.execute("PRAGMA count_changes = 1" if on else "PRAGMA count_changes = 0")

    @staticmethod
    def _to_completion(
        rows: Iterator[tuple[Any, ...]], cursor: Cursor, conn: apsw.Connection, kind: str
    ) -> Iterator[tuple[Any, ...]]:
        rows = iter(list(rows))
        if kind == "dml":
            cursor._rowcount = conn.changes()
        return rows

    @staticmethod
    def _step_many(
        cursor: Cursor,
        conn: apsw.Connection,
        acur: apsw.Cursor,
        sql: str,
        parameters: Any,
        can_cache: bool,
    ) -> Iterator[tuple[Any, ...]]:
        for params in parameters:
            for _ in acur.execute(sql, params, can_cache=can_cache):
                pass
            parameters.count += conn.changes()
        cursor._rowcount = parameters.count
        return NO_ROWS

    def _after_txn_error(self, on_txn_conn: bool) -> None:
        """SQLite may roll a whole transaction back on some errors; follow it."""
        owner = self._owner
        txn = owner._txns.txn
        if on_txn_conn and txn is not None and txn.connection.get_autocommit():
            owner._txns.rollback()


class _StatementTrace:
    """The exec trace of one statement: it describes the statement before its first step,
    refuses a second statement as the stdlib does, and, in a transaction, takes the table
    locks (table level) and notes the reads a pending rebase must know of, before SQLite runs
    it."""

    __slots__ = (
        "can_cache",
        "owner",
        "raw_description",
        "several",
        "sql",
        "table_level",
        "table_sets",
        "txn",
    )

    def __init__(self, owner: Connection, sql: str, txn: WriteTransaction | None) -> None:
        self.owner = owner
        self.table_sets = owner._table_sets  # asked on every run of an executemany
        self.sql = sql
        self.txn = txn
        self.table_level = txn is not None and txn.level.locks_tables
        self.raw_description: list[Any] = []
        self.several = False
        self.can_cache = True

    def __call__(self, acur: apsw.Cursor, stmt_sql: str, _bindings: Any) -> bool:
        if not self.raw_description:
            # Like the stdlib, refuse a second statement before running the first.
            if statements.has_more_statements(self.sql, stmt_sql):
                self.several = True
                return False
            self.raw_description.append(description.pre_step(acur))
        owner, txn = self.owner, self.txn
        if owner._trace is not None:
            owner._trace_statement(acur, stmt_sql)
        if txn is not None and (self.table_level or txn.rebase.pending):
            tables = self.table_sets.take(
                txn.schema_version, stmt_sql, prepared_now=not self.can_cache
            )
            if txn.rebase.pending:
                if locks.LAST_INSERT_ROWID in tables:
                    txn.rebase.observe_all()
                txn.rebase.observe_tables([t for t, m in tables.items() if m == "S"])
            if self.table_level:
                txn.locking.before_statement(tables, txn.fresh)
        return True


# What a statement's run turns into the stdlib's errors (``StatementRunner._error``).
_RUN_ERRORS = (
    apsw.Error,
    ConflictError,
    LockTimeoutError,
    KeyError,
    TypeError,
    OverflowError,
    UnicodeDecodeError,
)


def _caused(error: BaseException, cause: BaseException) -> BaseException:
    """``error`` as ``raise error from cause`` raises it."""
    error.__cause__ = cause
    return error


class Remaining:
    """The parameter sets of an ``executemany`` not yet run, across retries of the statement.

    A retry (``locks.Reprepare``) is signalled from the exec trace, before SQLite runs the set
    at hand: the sets before it ran and stay done, so running them again would insert their
    rows twice.  (``locks.Restart`` only comes at the first set, whose tables need locks.)
    """

    _NONE: Any = object()

    def __init__(self, parameters: Iterable[Any]) -> None:
        self._sets = iter(parameters)
        self._current = self._NONE
        self.count = 0  # rows changed by the sets done

    def __iter__(self) -> Iterator[Any]:
        while True:
            if self._current is self._NONE:
                try:
                    self._current = next(self._sets)
                except StopIteration:
                    return
            yield self._current
            self._current = self._NONE  # reached only once the set has run


def is_count_changes(sql: str) -> bool:
    """Whether ``sql`` sets ``PRAGMA count_changes``."""
    words = statements.first_keywords(sql, 2, past_empty=True)
    return len(words) > 1 and words[1] == "COUNT_CHANGES" and ("=" in sql or "(" in sql)


class NeedsExclusive(Exception):  # noqa: N818 - a signal, not an error
    """The statement needs the database to itself (architecture.md, "Exclusive operations")."""
