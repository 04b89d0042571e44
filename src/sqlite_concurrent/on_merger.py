"""A write transaction running on the merger, under the merge lock.

Three ways lead there (architecture.md, "Exclusive operations", and ``engine/ways.py``): a
transaction predicted short begins there (direct); an optimistic one that reaches something hot
goes on there with its work so far applied (escalated); and one that meets a statement a
changeset cannot carry waits for every other transaction to end and moves there (exclusive).
Outside a transaction, such a statement runs alone.  Each holds an ``engine.exclusive.Exclusive``
(the merger's write transaction) until it commits or rolls back.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import apsw

from . import crashpoints, statements
from .commit import merge
from .cursor import Cursor
from .engine import direct, exclusive, foreign_keys, ways
from .engine.transaction import WriteTransaction
from .errors import ConflictError, translate
from .locking import oslock, waits
from .process import exiting

if TYPE_CHECKING:
    from .dbapi import Connection
    from .transactions import Transactions

T = TypeVar("T")


class OnMerger:
    """Runs the transactions of ``txns`` (``owner``'s) that go onto the merger."""

    def __init__(self, txns: Transactions, owner: Connection) -> None:
        # Weakly: both own this (no reference cycle, see ``process/exiting.py``).
        self._txns = exiting.weak_proxy(txns)
        self._owner = exiting.weak_proxy(owner)
        self._watch = direct.Watch(_open_direct(txns))

    def begin_direct(self, by_savepoint: bool, immediate: bool) -> bool:
        """Take the merge lock (first come, first served) and begin on the merger.

        :returns: ``False`` if the lock is this thread's already (another connection's
            transaction holds it): the transaction then runs optimistically.
        """
        self._txns.script = None  # what a rolled-back optimistic one recorded
        # Everything that can be done before the merge lock is: others wait while it is held.
        defer = self._owner._deferral.take()
        txn = direct.DirectTransaction(
            level=self._owner._level,
            lockdb=self._txns.db.lockdb,
            begun_by_savepoint=by_savepoint,
            defer_foreign_keys=defer,
        )
        excl = self.take_merger(immediate=immediate)
        if excl is None:
            if self._owner.mode == "direct":
                raise oslock.HeldByThisThreadError
            return False
        if self.closed_to_direct():
            excl.finish(False)
            return False
        self.install_direct(excl, txn)
        if defer:
            foreign_keys.set_flag(self._owner._merger, True)
        crashpoints.reach("direct.begun")
        return True

    def take_merger(self, *, immediate: bool) -> exclusive.Exclusive | None:
        """The merge lock (first come, first served) and a write transaction on the merger;
        ``None`` if the lock is this thread's already (another connection's transaction)."""
        try:
            return exclusive.Exclusive(
                self._owner._merger,
                self._txns.db.merge_lock,
                None,
                enforce_foreign_keys=merge.foreign_keys(self._owner._reader),
                # The write lock from the start, so that no writer outside ours (Litestream,
                # a stock one) can make the first write fail with a stale snapshot; but with
                # attached database files, BEGIN IMMEDIATE would lock those too, and SQLite's
                # one connection lets a transaction detach one it has not used.
                begin="BEGIN IMMEDIATE" if immediate or not self._owner._state.files else "BEGIN",
            )
        except oslock.HeldByThisThreadError:
            return None
        except apsw.Error as e:
            raise translate(e) from e

    def closed_to_direct(self, besides: int = 0) -> bool:
        """Asked again once the merge lock is held, by every way of writing on the merger
        without table locks (direct, escalated, replayed, the autocommit fast path).

        Whether a table-level transaction is live (or an exclusive operation goes first) was
        asked before the wait; one may have registered since.  Asked under the lock, the
        answer holds: a table-level transaction waits until nobody holds the merge lock after
        it registers and before it pins its snapshot (``WriteTransaction.ensure_pinned``), so
        either it is registered by now, or its snapshot will include this transaction.
        ``besides``: an escalating transaction, which may be table-level itself.
        """
        return self._txns.db.lockdb.fast_path_closed(besides)

    def install_direct(self, excl: exclusive.Exclusive, txn: direct.DirectTransaction) -> None:
        """The open transaction is ``txn``, running directly in ``excl``."""
        excl.schema_changed = False
        txns = self._txns
        txns.exclusive = excl
        txns.txn = txn  # type: ignore[assignment]  # see ``Transactions.txn``
        if not self._watch.pending:
            self._watch.began(txns.db.publisher)

    def escalate(self) -> bool:
        """Go on directly from this statement, its work so far applied on the merger, if what
        it read is still current (so the rest reads the same database); otherwise it stays
        optimistic.  Waits for the merge lock first come, first served."""
        txn = self._txns.txn
        assert isinstance(txn, WriteTransaction) and self._txns.exclusive is None
        # Unresolved deferred foreign-key violations: a changeset cannot carry their count.
        if self._txns.other_open_here() or foreign_keys.unresolved(txn.connection):
            return False
        try:
            self._txns.db.merge_lock.acquire()
        except oslock.HeldByThisThreadError:
            return False
        try:
            current = not self.closed_to_direct(txn.txn_id) and txn.reads_current()
        except BaseException:
            self._txns.db.merge_lock.release()
            raise
        if not current:
            self._txns.db.merge_lock.release()
            return False
        self._move_to_merger(txn, locked=True)
        assert self._txns.exclusive is not None
        self._txns.exclusive.schema_changed = False
        crashpoints.reach("escalate.applied")
        self._txns.chooser.escalated()
        return True

    def exclusive_alone(
        self, cursor: Cursor, sql: str, parameters: Any, many: bool, kind: str
    ) -> None:
        """Outside a transaction: one statement a changeset cannot carry, run by itself once
        every live transaction has ended."""
        run = self._owner._runner.run
        self.alone(lambda: run(cursor, self._owner._merger, sql, parameters, many, False, kind))

    def alone(self, work: Callable[[], T]) -> T:
        """Run ``work`` on the merger with the database to itself: the ``db`` lock in X mode
        (every other transaction has ended, new ones wait) and the merge lock."""
        txn_id, _ = self._txns.db.lockdb.begin(self._owner.lock_level)
        waits.owned_by_this_thread(txn_id)
        self._owner._deferral.end()  # a write transaction of its own, ended when this returns
        try:
            exclusive.wait_for_db(self._txns.db.lockdb, txn_id, self._owner.timeout)
            with self._txns.db.merge_lock:
                result = work()
        finally:
            waits.forget(txn_id)
            waits.wake(self._txns.db.lockdb, self._txns.db.lockdb.end(txn_id))
        self._txns.after_merge()
        return result

    def become_exclusive(self) -> None:
        """The open transaction met a statement a changeset cannot carry: wait for the others
        to end, then move what it did so far onto the merger and go on there.

        A lock timeout leaves the transaction as it was.  A conflict (a row it wrote, or a page
        it read, changed since its snapshot) rolls it back; if nothing of it was seen, its
        statements run again on the latest database and it goes on there, and otherwise every
        statement raises the conflict again until the application ends it.
        """
        txn = self._txns.txn
        assert txn is not None and self._txns.exclusive is None
        foreign_keys.check_move(txn.connection)
        try:
            txn.ensure_registered()
            exclusive.wait_for_db(self._txns.db.lockdb, txn.txn_id, self._owner.timeout)
        except ConflictError as e:  # a deadlock victim: doomed, so free its locks for the others
            self._txns.abort(e)
            raise
        script = self._txns.script
        try:
            self._move_to_merger(txn, locked=False)
        except ConflictError as e:
            if not self._txns.replays.after_conflict(script, txn, e):
                raise

    def _move_to_merger(self, txn: WriteTransaction, *, locked: bool) -> None:
        """Apply what ``txn`` wrote so far on the merger, its open savepoints with it, and go
        on there (an exclusive operation, or an escalation).  If that fails, the transaction
        has ended; after a :class:`ConflictError`, every statement raises it again until the
        application ends it.  ``locked``: the caller holds the merge lock, released with the
        rest."""
        # From here on it reads the latest database: what it read so far must still be current
        # there, or its reads would mix two states.  Checked inside the merger's write
        # transaction: a writer that is not ours (a stock one) does not wait for the merge lock.
        reads = txn.read_check()
        self._txns.script = None  # direct from here on: nothing to run again
        self._txns.detach_cursors()
        excl = None
        try:
            try:
                pending = txn.prepare(self._owner._table_shapes, moving=True)
            except BaseException:
                if locked:
                    self._txns.db.merge_lock.release()
                raise
            excl = exclusive.Exclusive(
                self._owner._merger,
                self._txns.db.merge_lock,
                pending,
                txn.saved,
                enforce_foreign_keys=merge.foreign_keys(self._owner._reader),
                locked=locked,
                reads=reads,
            )
            txn.release_snapshot()  # its reads are checked: from here on it reads the latest
            if txn.defer_foreign_keys:
                foreign_keys.set_flag(self._owner._merger, True)
            self._txns.exclusive = excl
        except BaseException as e:
            if excl is not None:  # rolls back, lets go of the merge lock
                excl.finish(False)
            self._txns.txn = None
            txn.end(False)
            error = translate(e) if isinstance(e, apsw.Error) else e
            if isinstance(error, ConflictError):  # ended: the application's ROLLBACK ends it
                self._txns.chooser.learn(error)
                self._txns.aborted = error
            if error is e:
                raise
            raise error from e

    def run_exclusive(
        self, cursor: Cursor, sql: str, parameters: Any, many: bool, kind: str
    ) -> None:
        excl = self._txns.exclusive
        assert excl is not None and self._txns.txn is not None
        if kind != "dml" and (kind == "exclusive" or statements.may_change_schema(sql)):
            excl.schema_changed = True
        if kind == "release" and self._txns.txn.savepoints.would_end(sql):
            # The merger's transaction began with BEGIN: SQLite would not check the commit
            # this RELEASE is, so it is checked here, before anything is released.
            foreign_keys.check_commit(self._owner._merger)
        # The stdlib's blob handles expire when their row changes; ours learn it from the
        # update hook, set on the merger only while it is needed.
        watch = bool(self._owner._open_blobs)
        if watch:
            self._owner._merger.set_update_hook(self._owner._router.on_merger_write)
        try:
            self._owner._runner.run(cursor, self._owner._merger, sql, parameters, many, False, kind)
        finally:
            if watch:
                self._owner._merger.set_update_hook(None)
            if self._txns.exclusive is not None and not self._txns.exclusive.open:
                # SQLite rolled the whole transaction back (as it does after some errors).
                self.finish_exclusive(commit=False)
        if kind in statements.SAVEPOINT_KINDS and self._txns.exclusive is not None:
            stack = self._txns.txn.savepoints
            stack.ran(sql)
            if stack.ended:
                # The merger's transaction began with BEGIN, so SQLite goes on; on the
                # transaction connection, as in the stdlib, this RELEASE was the commit.
                self.finish_exclusive(commit=True)

    def finish_exclusive(self, *, commit: bool) -> None:
        excl, self._txns.exclusive = self._txns.exclusive, None
        txn, self._txns.txn = self._txns.txn, None
        assert excl is not None and txn is not None
        committed = False
        try:
            committed = excl.finish(commit)
        except apsw.Error as e:
            raise translate(e) from e
        finally:
            self._txns.end(txn, committed)
            # Rolled back, the TEMP objects it created are gone again; committed, its schema
            # changes are now there for the reader to see.
            if excl.schema_changed:
                self._owner._schemas.changed()
        if committed and self._txns.chooser.way in (ways.DIRECT, ways.ESCALATED):
            # What it wrote on the merger is not in its changed tables: a table-level
            # transaction holding an older snapshot must learn of it.
            self._txns.db.lockdb.bump_all_versions_if_table_level(self._owner._merger)
        if committed:
            self._txns.after_merge()


def _open_direct(txns: Transactions) -> Callable[[], direct.DirectTransaction | None]:
    """What the watch asks from the publisher's thread: the open direct transaction of
    ``txns``, held weakly (the publisher may outlive the connection)."""
    ref = weakref.ref(txns)

    def current() -> direct.DirectTransaction | None:
        txns = ref()
        txn = txns.txn if txns is not None and txns.exclusive is not None else None
        return txn if isinstance(txn, direct.DirectTransaction) else None

    return current
