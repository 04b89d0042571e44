"""Where each statement of a connection runs.

Outside a transaction a statement runs on the read-only reader; DML in autocommit mode runs as
its own transaction (straight on the merger when it can, architecture.md "A commit, straight
down"); inside a transaction, on its connection, or on the merger once it runs there (directly,
or as an exclusive operation).  BEGIN, COMMIT and ROLLBACK are acted on, not run; some pragmas
are run on every connection, and statements on TEMP objects or attached memory databases go
to the merger, the one connection that has them (:mod:`.connstate`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import apsw

from . import connstate, errors, running, statements
from .cursor import Cursor
from .engine import authorizer, foreign_keys, journal_mode, rerun, ways
from .engine.transaction import WriteTransaction
from .errors import ConflictError, IntegrityError, NotSupportedError, translate
from .process import exiting

if TYPE_CHECKING:
    from .dbapi import Connection
    from .running import StatementRunner
    from .schemas import Schemas
    from .transactions import Transactions


class Router:
    """Sends each statement of ``owner`` where it can run, beginning and ending transactions
    on the way."""

    def __init__(
        self, owner: Connection, runner: StatementRunner, txns: Transactions, schemas: Schemas
    ) -> None:
        self._owner = exiting.weak_proxy(owner)  # no reference cycle (see exiting.py)
        self._runner = runner
        self._txns = txns
        self._schemas = schemas
        # While an autocommit statement runs straight on the merger: the tables it wrote, and
        # the rowids it updated or deleted by table (see ``_autocommit_fast``).
        self._fast_rows: tuple[set[str], dict[str, list[int]]] | None = None

    def current_connection(self, schema: str = "main") -> apsw.Connection:
        """The SQLite connection a statement reading ``schema`` would run on now (a
        transaction's is pinned)."""
        if self._txns.script is not None:  # a blob or a copy of the database: what the caller sees
            self._txns.replays.observe()
        if self._txns.later is not None:
            self._txns.settle(None, "other")
        if self._txns.exclusive is not None or schema.lower() in self._owner._state.local_dbs:
            return self._owner._merger
        if self._txns.txn is not None:
            self._txns.txn.ensure_pinned()
            return self._txns.txn.connection
        return self._owner._reader

    def blob_write(self, where: tuple[str, str, str, int], offset: int, data: bytes) -> None:
        """A write through a blob handle of a shared database: inside the open transaction,
        or in one of its own."""
        if self._txns.aborted is not None:
            raise errors.still_aborted(self._txns.aborted, "roll it back before the next write")
        if self._txns.later is not None:
            self._txns.settle(None, "other")
        own = self._txns.txn is None
        if own:
            self._txns.begin_optimistic()
        try:
            if where[0].lower() != "main" and self._txns.exclusive is None:
                # TEMP and attached databases are written on the merger (see connstate).
                self._txns.on_merger.become_exclusive()
            blob = self.current_connection(where[0]).blob_open(*where, True)
            try:
                blob.seek(offset)
                blob.write(data)
            finally:
                blob.close()
        except BaseException:
            if own:
                self._txns.aborted = None  # the write was the whole transaction
                if self._txns.txn is not None:
                    self._txns.rollback()
            raise
        if own:
            self._txns.commit()

    def control(self, sql: str, kind: str) -> None:
        """BEGIN, COMMIT and ROLLBACK as statements, and anything while the transaction is
        aborted (only its end is accepted then)."""
        if kind in ("begin", "commit", "rollback"):
            self._owner._trace_control(sql)  # the stdlib runs it; we only act on it
        if self._txns.aborted is not None:
            if kind in ("commit", "rollback"):
                self._txns.end_aborted(commit=kind == "commit")
                return
            raise errors.still_aborted(self._txns.aborted, "roll it back before the next statement")
        if kind == "begin":
            if self._txns.txn is not None or self._txns.later is not None:
                raise errors.sqlite_error("cannot start a transaction within a transaction")
            words = statements.first_keywords(sql, 2, past_empty=True)
            self._txns.begin(immediate=len(words) > 1 and words[1] in ("IMMEDIATE", "EXCLUSIVE"))
        elif self._txns.later is not None:
            self._txns.later = None  # no statement ran: nothing to end
        elif self._txns.txn is None:
            verb = "commit" if kind == "commit" else "rollback"
            raise errors.sqlite_error(f"cannot {verb} - no transaction is active")
        elif kind == "commit":
            self._txns.commit()
        else:
            self._txns.rollback()

    def route(self, cursor: Cursor, sql: str, parameters: Any, many: bool, kind: str) -> None:
        """A statement other than BEGIN, COMMIT and ROLLBACK, on a shared database."""
        if self._txns.later is not None:
            self._txns.settle(sql, kind)
        if kind in ("attach", "detach"):
            self._schemas.attach_or_detach(cursor, sql, parameters, many, kind)
            return
        if (
            self._txns.exclusive is None
            and self._owner._state.has_local
            and kind not in statements.SAVEPOINT_KINDS
        ):
            probe = self._probe(sql, parameters, many)
            if probe is not None and probe.local:
                self._execute_local(cursor, sql, parameters, many, kind, probe.writes)
                return
        if self._txns.txn is None and kind == "savepoint":
            self._txns.begin(by_savepoint=True)  # as in SQLite, it starts a transaction
            if self._txns.later is not None:
                self._txns.settle(sql, kind)
        if (
            self._txns.txn is None
            and kind == "dml"
            and self._dml_outside_txn(cursor, sql, parameters, many)
        ):
            return
        if kind == "pragma" and self._pragma(cursor, sql, parameters, many):
            return
        if kind == "exclusive" and self._txns.exclusive is None:
            if self._txns.txn is None:
                self._txns.on_merger.exclusive_alone(cursor, sql, parameters, many, kind)
                return
            if statements.first_keywords(sql, 1, past_empty=True) == ["VACUUM"]:
                raise errors.sqlite_error("cannot VACUUM from within a transaction")
            self._txns.on_merger.become_exclusive()
        if self._txns.exclusive is not None:
            self._txns.on_merger.run_exclusive(cursor, sql, parameters, many, kind)
        elif self._txns.txn is not None:
            self._run_in_txn(cursor, sql, parameters, many, kind)
        else:
            self._run_on_reader(cursor, sql, parameters, many, kind)

    def _dml_outside_txn(self, cursor: Cursor, sql: str, parameters: Any, many: bool) -> bool:
        """DML with no transaction open: an implicit BEGIN (``isolation_level`` not None), after
        which the statement still has to run (``False``), or an autocommit statement, run here
        as its own transaction (``True``)."""
        if self._owner._isolation_level is not None:
            self._owner._trace_control(f"BEGIN {self._owner._isolation_level}")
            self._txns.begin()
            if self._txns.later is not None:
                self._txns.settle(sql, "dml")
            return False
        total_changes, lastrowid = self._owner._total_changes, cursor._lastrowid
        try:
            self._autocommit(cursor, sql, parameters, many)
        except _DeferredConstraintError as failed:
            # A deferred constraint broken: for the stdlib, the statement failed at its end,
            # and left no count, cursor row id or rows behind; SQL's changes() is 0 after it,
            # and its last_insert_rowid() that of the row it inserted, as SQLite leaves them.
            self._owner._total_changes, self._owner._changes = total_changes, 0
            cursor._reset()
            cursor._lastrowid = lastrowid
            if not many or len(parameters) < 2:
                raise failed.error from None
            # The stdlib ran each set as a statement of its own, so the sets before the one
            # that breaks the constraint stay committed: they run again, one at a time.
            self._each_set_alone(cursor, sql, parameters)
        return True

    def _each_set_alone(self, cursor: Cursor, sql: str, parameters: list[Any]) -> None:
        """An autocommit ``executemany`` run again as one statement per parameter set,
        stopping at the first that fails."""
        changed = 0
        for one in parameters:
            self._dml_outside_txn(cursor, sql, [one], True)
            changed += cursor._rowcount
        cursor._rowcount = changed

    def _autocommit(self, cursor: Cursor, sql: str, parameters: Any, many: bool) -> None:
        """Run an autocommit statement as a transaction of its own.

        :raises _DeferredConstraintError: the statement ran, but its commit broke a deferred
            constraint.
        """
        if self._owner._level.autocommit_fast_path and self._autocommit_fast(
            cursor, sql, parameters, many
        ):
            return
        self._txns.begin_optimistic()
        self._txns.chooser.began(ways.OPTIMISTIC, "")
        # Autocommit: the statement is its own transaction, failing as a whole.
        try:
            try:
                self._run_in_txn(cursor, sql, parameters, many, "dml")
            except Exception as e:
                if many and self._txns.txn is not None:
                    self._commit_sets_done(e)
                raise
            cursor._detach_from_txn()
            self._commit_autocommit()
        except BaseException:
            self._txns.aborted = None  # the statement was the whole transaction
            if self._txns.txn is not None:
                self._txns.rollback()
            raise

    def _commit_autocommit(self) -> None:
        try:
            self._txns.commit()
        except IntegrityError as e:  # still open, as in SQLite; rolled back by the caller
            raise _DeferredConstraintError(e) from e

    def _commit_sets_done(self, error: Exception) -> None:
        """An autocommit ``executemany`` failed at one parameter set: the stdlib ran each as a
        statement of its own, so the sets before it stay committed.  SQLite undid the failing
        one; the rest is committed here, and ``error`` raised after."""
        try:
            self._commit_autocommit()
        except _DeferredConstraintError:
            raise
        except BaseException as e:
            raise e from error
        raise error

    def _pragma(self, cursor: Cursor, sql: str, parameters: Any, many: bool) -> bool:
        """A pragma that is not run as the statements around it are; ``False`` for the rest."""
        if (mode := journal_mode.requested(sql)) is not None:
            if mode != "wal":
                raise NotSupportedError(journal_mode.refusal(mode))
            # The database's own mode, not that of a transaction's private connection.
            self._runner.run(cursor, self._owner._reader, sql, parameters, many, False, "pragma")
        elif foreign_keys.is_defer_pragma(sql):
            self._defer_pragma(cursor, sql, parameters)
        elif running.is_count_changes(sql):
            # Kept on the reader, where reading it back finds it; the statements it changes
            # (DML) turn it on where they run (``StatementRunner.run``).
            self._runner.run(cursor, self._owner._reader, sql, parameters, many, False, "pragma")
        elif self._is_connection_pragma(sql):
            self._run_connection_pragma(cursor, sql, parameters)
        else:
            return False
        return True

    def _run_on_reader(
        self, cursor: Cursor, sql: str, parameters: Any, many: bool, kind: str
    ) -> None:
        """Outside transactions a statement runs on the read-only reader; what it refuses
        writes."""
        try:
            self._runner.run(cursor, self._owner._reader, sql, parameters, many, False, kind)
        except apsw.AuthError:
            # The reader refused a write: a changeset cannot carry it (architecture.md, "Exclusive
            # operations"), unless it writes nothing but TEMP objects (``CREATE TEMP TABLE``), which
            # need no one to wait.
            probe = self._probe(sql, parameters, many)
            if probe is not None and probe.local:
                self._execute_local(cursor, sql, parameters, many, kind, probe.writes)
            else:
                self._txns.on_merger.exclusive_alone(cursor, sql, parameters, many, kind)

    def _probe(self, sql: str, parameters: Any, many: bool) -> connstate.Probe | None:
        """What ``sql`` touches, as preparing it on the merger shows (:mod:`.connstate`)."""
        state = self._owner._state
        if not state.listening:
            state.listening = True
            self._owner._merger.authorizer = self._owner._merger_authorizer()
        if many:
            parameters = parameters[0] if parameters else ()
        try:
            return state.probe(self._owner._merger, sql, parameters)
        except apsw.SQLError as e:
            raise translate(e) from e

    def _execute_local(
        self, cursor: Cursor, sql: str, parameters: Any, many: bool, kind: str, writes: bool
    ) -> None:
        """Run a statement that touches TEMP objects (or an attached in-memory database) on the
        merger, the one connection that has them (:mod:`.connstate`).

        Outside a transaction it runs at once if it writes nothing the other connections
        share, and alone (an exclusive operation) if it does.  A transaction it is part of
        becomes exclusive first, so that the TEMP rows it writes commit or roll back with the
        rest, as they would on the stdlib's one connection.
        """
        implicit = kind == "dml" and self._owner._isolation_level is not None  # the stdlib's BEGIN
        if self._txns.txn is None and not implicit:
            if writes:
                self._txns.on_merger.exclusive_alone(cursor, sql, parameters, many, kind)
            else:
                self._runner.run(cursor, self._owner._merger, sql, parameters, many, False, kind)
            return
        if self._txns.txn is None:
            self._owner._trace_control(f"BEGIN {self._owner._isolation_level}")
            self._txns.begin_optimistic()
            self._txns.chooser.began(ways.OPTIMISTIC, "")
        self._txns.on_merger.become_exclusive()
        self._txns.on_merger.run_exclusive(cursor, sql, parameters, many, kind)

    def _run_in_txn(self, cursor: Cursor, sql: str, parameters: Any, many: bool, kind: str) -> None:
        txn = self._txns.txn
        assert isinstance(txn, WriteTransaction)
        given = parameters
        if many:  # shared with the run on the merger below, should it come to that
            parameters = running.Remaining(parameters)
        if (
            self._txns.chooser.escalates_at(
                sql,
                kind,
                wrote=txn.wrote,
                fast_path_closed=lambda: self._owner._db.lockdb.fast_path_closed(txn.txn_id),
            )
            and self._txns.on_merger.escalate()
        ):
            self._txns.on_merger.run_exclusive(cursor, sql, parameters, many, kind)
            return
        txn.ran_dml = txn.ran_dml or kind == "dml"
        try:
            self._runner.run(cursor, txn.connection, sql, parameters, many, True, kind)
        except running.NeedsExclusive:
            self._txns.on_merger.become_exclusive()
            self._txns.on_merger.run_exclusive(cursor, sql, parameters, many, kind)
            return
        except ConflictError as e:
            script, self._txns.script = self._txns.script, None
            if not self._txns.replays.after_conflict(script, txn, e):
                raise
            self._txns.on_merger.run_exclusive(cursor, sql, parameters, many, kind)
            return
        except BaseException:
            self._txns.script = None  # the application sees an error the database gave it
            raise
        if kind in statements.SAVEPOINT_KINDS:
            # A RELEASE may have committed it (see ``StatementRunner.run``): harmless.
            txn.savepoints.ran(sql)
        script = self._txns.script
        if script is None or self._txns.txn is not txn:
            return
        if kind not in rerun.KINDS:  # a savepoint that began the transaction
            self._txns.script = None
            return
        cursor._statement = script.record(cursor, sql, given, many, kind)
        if cursor._statement is None:
            self._txns.script = None
        else:
            script.changes += self._runner.last_changes

    def _autocommit_fast(self, cursor: Cursor, sql: str, parameters: Any, many: bool) -> bool:
        """Run one autocommit DML statement straight on the merger (architecture.md, "A commit,
        straight down"): no snapshot, overlay or session, since there is no think time to overlap.

        Its own process commits it, so it needs no commit marker.  If it touched a row (or
        table) that a live transaction has locked, it is undone and ``False`` returned: the
        normal path then waits for the lock.
        Page-level transactions need nothing: they validate against the frames it appends.
        While table-level transactions are live it is not taken at all: their locks cover
        tables (WITHOUT ROWID ones included) that the update hook cannot report.
        """
        lockdb = self._owner._db.lockdb
        if lockdb.fast_path_closed():
            return False
        self._owner._deferral.end()  # a write transaction of its own (or one that follows)
        touched: dict[str, list[int]] = {}  # rows updated or deleted, by table
        written: set[str] = set()
        self._fast_rows = (written, touched)
        conn = self._owner._merger
        # Only while it runs: every merge would otherwise call back into Python for each row,
        # inside the merge lock.
        conn.set_update_hook(self.on_merger_write)
        try:
            with self._owner._db.merge_lock:
                if self._txns.on_merger.closed_to_direct():
                    return False
                conn.execute("BEGIN IMMEDIATE")
                failed: Exception | None = None
                try:
                    try:
                        self._runner.run(cursor, conn, sql, parameters, many, False, "dml")
                    except Exception as e:
                        # An executemany's sets before the failing one stay committed, as each
                        # was a statement of its own for the stdlib (``_commit_sets_done``).
                        if not many or not conn.in_transaction:
                            raise
                        failed = e
                    if self._owner._level.locks_rows and self._owner._db.lockdb.locked_by_others(
                        written, touched
                    ):
                        conn.execute("ROLLBACK")
                        return False
                    try:
                        conn.execute("COMMIT")
                    except apsw.ConstraintError as e:  # a deferred foreign key
                        raise _DeferredConstraintError(translate(e)) from e
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
        except apsw.Error as e:
            raise translate(e) from e
        finally:
            conn.set_update_hook(None)
            self._fast_rows = None
        # One may have begun meanwhile, its snapshot perhaps before this commit.
        self._owner._db.lockdb.bump_versions_if_table_level(written)
        self._txns.after_merge()
        if failed is not None:
            raise failed
        return True

    def on_merger_write(self, op: int, db: str, table: str, rowid: int) -> None:
        self._owner._open_blobs.row_written(db, table, rowid)
        fast = self._fast_rows
        if fast is not None and db == "main":
            written, touched = fast
            written.add(table)
            # A new row has a rowid no live transaction can hold yet; changed ones may be.
            if op != apsw.SQLITE_INSERT:
                touched.setdefault(table, []).append(rowid)

    @staticmethod
    def _is_connection_pragma(sql: str) -> bool:
        words = statements.first_keywords(sql, 2, past_empty=True)
        return (
            len(words) > 1
            and words[1].lower() in authorizer.CONNECTION_PRAGMAS
            and ("=" in sql or "(" in sql)
        )

    def _run_connection_pragma(self, cursor: Cursor, sql: str, parameters: Any) -> None:
        """Set a connection pragma on every connection this one uses, now and when opened."""
        self._runner.run(cursor, self._owner._reader, sql, parameters, False, False, "pragma")
        self._owner._connection_pragmas.append(sql)
        self._owner._db.merger_fsyncs = None
        for conn in (
            self._owner._snapshot_conn,
            self._owner._merger,
            self._owner._txn_connection.conn,
        ):
            if conn is not None:
                try:
                    conn.execute(sql, parameters).fetchall()
                except apsw.Error as e:
                    raise translate(e) from e

    def _defer_pragma(self, cursor: Cursor, sql: str, parameters: Any) -> None:
        """PRAGMA defer_foreign_keys where the transaction's statements run, outside one on
        the reader (see :mod:`.foreign_keys`)."""
        txn = self._txns.txn
        if txn is None:
            self._runner.run(cursor, self._owner._reader, sql, parameters, False, False, "pragma")
            self._owner._deferral.set_on_reader()
            return
        if self._txns.exclusive is not None:
            self._runner.run(cursor, self._owner._merger, sql, parameters, False, False, "pragma")
            conn = self._owner._merger
        else:
            self._runner.run(cursor, txn.connection, sql, parameters, False, True, "pragma")
            conn = txn.connection  # after the run: pinning may have replaced it
        with self._owner._denied.muting():
            # Kept for a connection the transaction moves to (a new one, or the merger).
            txn.defer_foreign_keys = foreign_keys.flag(conn)


class _DeferredConstraintError(Exception):
    """An autocommit statement's commit broke a deferred constraint: ``error`` is what the
    stdlib raises for the statement."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error
