"""Running a transaction again instead of failing it (engine/rerun.py).

A transaction whose results the application never observed can, instead of failing with
``ConflictError`` at merge, be run again statement by statement on the latest database under
the merge lock, as stock SQLite would have run it then; one that is about to be observed and
has written goes on directly first, so that what it shows is current.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import apsw

from . import crashpoints
from .cursor import Cursor
from .engine import direct, exclusive, foreign_keys, rerun
from .engine.transaction import WriteTransaction
from .errors import ConflictError, Error, translate
from .process import exiting

if TYPE_CHECKING:
    from .dbapi import Connection
    from .transactions import Transactions


class Replays:
    """Runs again the transactions of ``txns`` (``owner``'s) that nobody saw."""

    def __init__(self, txns: Transactions, owner: Connection) -> None:
        # Weakly: both own this (no reference cycle, see ``process/exiting.py``).
        self._txns = exiting.weak_proxy(txns)
        self._owner = exiting.weak_proxy(owner)

    def may_run_again(self, script: rerun.Script | None) -> bool:
        """Whether a transaction that conflicted can be run again (rerun.py)."""
        # A trace or an authorizer of the application's would hear the statements twice.
        # Running again is running directly: not in a mode that runs everything optimistically.
        return (
            self._owner.mode == "auto"
            and script is not None
            and self._owner._trace is None
            and self._owner._user_authorizer is None
        )

    def run_again(
        self, script: rerun.Script, txn: WriteTransaction, conflict: ConflictError
    ) -> None:
        """Run the ended transaction ``txn``'s statements again on the latest database,
        directly, and commit them; raise ``conflict`` if they cannot run directly now.

        :raises Error: a statement failed this time, as its own class, naming it; nothing of
            the transaction is committed, and it has ended.
        """
        excl = self._replay(script, txn)
        if excl is None:
            raise conflict
        try:
            foreign_keys.check_commit(self._owner._merger)
            crashpoints.reach("rerun.ran")
        except BaseException:
            excl.finish(False)
            raise
        try:
            excl.finish(True)
        except apsw.Error as e:
            raise translate(e) from e
        self._txns.chooser.replayed(conflict)
        # As after a direct transaction (``Transactions.finish_exclusive``).
        self._txns.db.lockdb.bump_all_versions_if_table_level(self._owner._merger)
        self._txns.after_merge()

    def _replay(self, script: rerun.Script, txn: WriteTransaction) -> exclusive.Exclusive | None:
        """Take the merge lock and run ``script`` again on the merger, in a write transaction
        left open there; its cursors then show the new results.  ``None`` if it cannot run
        directly now (as for a direct transaction, ``Transactions._may_run_direct``).

        :raises Error: a statement failed, as its own class, naming it; the merger's
            transaction is rolled back, and the cursors and counters are as they were.
        """
        if self._txns.db.lockdb.fast_path_closed() or self._txns.other_open_here():
            return None
        excl = self._txns.on_merger.take_merger(immediate=False)
        if excl is None:
            return None
        if self._txns.on_merger.closed_to_direct():
            excl.finish(False)
            return None
        counters = self._owner._total_changes, self._owner._last_insert_rowid
        self._owner._total_changes -= script.changes  # counted again as they run
        self._owner._last_insert_rowid = script.last_insert_rowid  # as the first run began
        ran: list[tuple[rerun.Statement, Cursor]] = []
        try:
            if txn.defer_foreign_keys:
                foreign_keys.set_flag(self._owner._merger, True)
            for statement in script.statements:
                cursor = Cursor(self._owner)  # the application's cursor is told only if all runs
                try:
                    self._owner._runner.run(
                        cursor,
                        self._owner._merger,
                        statement.sql,
                        statement.parameters,
                        statement.many,
                        False,
                        statement.kind,
                    )
                except Error as e:
                    raise rerun.naming(e, statement.sql) from e
                ran.append((statement, cursor))
        except BaseException:
            self._owner._total_changes, self._owner._last_insert_rowid = counters
            excl.finish(False)
            raise
        for statement, cursor in ran:
            shown = statement.cursor()
            if shown is not None and shown._statement is statement:
                _adopt(shown, cursor, lastrowid=not statement.many)
        return excl

    def observe(self) -> None:
        """The application is about to see something of the open transaction: it can no
        longer be run again.  One that wrote goes on directly first, outside ``transact``,
        as stock SQLite's would hold its write lock from its first write on: what it sees is
        then current, and it cannot conflict (``_escalate_by_replay``)."""
        script, self._txns.script = self._txns.script, None
        txn = self._txns.txn
        if (
            script is None
            or not script.wrote
            or self._owner.mode != "auto"
            or self._txns.chooser.attempt is not None
            or self._txns.exclusive is not None
            or not isinstance(txn, WriteTransaction)
            or not self.may_run_again(script)
        ):
            return
        # Failing on the latest database, it stays as it was, and will conflict.
        with contextlib.suppress(Error):
            self._escalate_by_replay(script, txn)

    def _escalate_by_replay(self, script: rerun.Script, txn: WriteTransaction) -> None:
        """Run ``txn``'s statements so far again on the merger and go on there directly; the
        optimistic transaction ends.  Nothing changes if the merge lock cannot be taken now."""
        excl = self._replay(script, txn)
        if excl is None:
            return
        self._txns.txn = None
        self._txns.detach_cursors()
        try:
            self._txns.end(txn, False)
        except BaseException:
            excl.finish(False)
            raise
        self._go_on_directly(excl, txn)

    def after_conflict(
        self, script: rerun.Script | None, txn: WriteTransaction, conflict: ConflictError
    ) -> bool:
        """A statement of ``txn`` conflicted (a stale snapshot, a deadlock), and the
        transaction was rolled back: if nothing of it was seen, and outside ``transact``, run
        its statements so far again on the merger and go on there directly, so that the
        statement can run again there, as stock SQLite would have run it after waiting."""
        if (
            self._txns.aborted is not conflict
            or self._txns.chooser.attempt is not None
            or not self.may_run_again(script)
        ):
            return False
        assert script is not None
        try:
            excl = self._replay(script, txn)
        except Error:
            return False  # what ran before fails now: the conflict stands
        if excl is None:
            return False
        self._txns.aborted = None
        self._go_on_directly(excl, txn)
        return True

    def _go_on_directly(self, excl: exclusive.Exclusive, txn: WriteTransaction) -> None:
        """The optimistic ``txn`` has ended; its work so far is on the merger in ``excl``:
        the transaction goes on there, directly."""
        moved = direct.DirectTransaction(
            txn_id=txn.txn_id,
            level=self._owner._level,
            lockdb=self._txns.db.lockdb,
            begun_by_savepoint=False,  # a savepoint would have stopped the recording
            defer_foreign_keys=txn.defer_foreign_keys,
        )
        self._txns.on_merger.install_direct(excl, moved)
        self._txns.chooser.escalated()
        crashpoints.reach("escalate.replayed")


def _adopt(shown: Cursor, ran: Cursor, *, lastrowid: bool) -> None:
    """``shown`` shows what ``ran`` got running its statement again (rerun.py)."""
    shown.description = ran.description
    shown._rowcount = ran._rowcount
    shown._rows_pending = ran._rows_pending
    shown._converters = ran._converters
    shown._rows = ran._rows
    shown._on_txn_conn = False
    shown._inserted_rows = []  # the rowids it chose were its own to choose again
    if lastrowid:  # executemany leaves it alone
        shown._lastrowid = ran._lastrowid
