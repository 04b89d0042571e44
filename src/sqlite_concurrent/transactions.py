"""The open write transaction of one connection, and its life.

A transaction begins when the application's BEGIN (explicit, or the stdlib's implicit one before
DML) is followed by its first statement, which decides how it runs (``engine/ways.py``):
directly on the merger under the merge lock, or optimistically on a snapshot.  An optimistic one
may go on directly from a statement (escalation), or move onto the merger for a statement a
changeset cannot carry (an exclusive operation, architecture.md "Exclusive operations").  It
ends by commit (a merge, or the merger's own COMMIT) or rollback; one a conflict or lock timeout
doomed stays aborted until the application ends it.  Running it again instead of conflicting is
:mod:`.replaying`'s.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import apsw

from . import crashpoints, errors, statements
from .commit import merge
from .cursor import Cursor
from .engine import exclusive, foreign_keys, rerun, ways
from .engine.database import SharedDatabase
from .engine.transaction import WriteTransaction
from .errors import ConflictError, translate
from .locking import oslock, waits
from .on_merger import OnMerger
from .process import exiting
from .replaying import Replays

if TYPE_CHECKING:
    from .dbapi import Connection

T = TypeVar("T")

log = logging.getLogger("sqlite_concurrent")


class Transactions:
    """The open transaction of ``owner``, and how it begins, runs on the merger and ends."""

    db: SharedDatabase  # once the owner opened a shared database

    def __init__(self, owner: Connection, mode: str) -> None:
        self._owner = exiting.weak_proxy(owner)  # no reference cycle (see exiting.py)
        # The open transaction.  A direct one is a ``direct.DirectTransaction``, typed as this:
        # while ``exclusive`` is set, only what both have (``savepoints``, ``saved``,
        # ``defer_foreign_keys``, ``end``) is used.
        self.txn: WriteTransaction | None = None
        self.exclusive: exclusive.Exclusive | None = None  # the open transaction went exclusive
        # A conflict or lock timeout rolled the application's open transaction back: until
        # the application ends it, statements fail instead of starting a new transaction
        # that a later commit() would commit without the work before the error.
        self.aborted: errors.OperationalError | None = None
        # BEGIN ran and the first statement has not: how the transaction runs depends on it.
        self.later: tuple[bool, bool] | None = None
        # What the open optimistic transaction ran, while it can still be run again instead of
        # conflicting; ``None`` once the application saw something of it (rerun.py).
        self.script: rerun.Script | None = None
        self.thread = 0  # the thread that began it
        self.chooser = ways.Chooser(mode)  # how each transaction runs (``engine/ways.py``)
        self.cursors: weakref.WeakSet[Cursor] = weakref.WeakSet()  # reading its connection
        self.replays = Replays(self, owner)
        self.on_merger = OnMerger(self, owner)

    def retrying(self, work: Callable[[], T], retries: int) -> T:
        """``Connection.transact``: ``work`` in a transaction of the owner, committed; run
        again after a :class:`ConflictError` and a jittered backoff, up to ``retries`` more
        times."""
        conn = self._owner
        try:
            for attempt in range(retries + 1):
                # A first attempt may conflict (it is retried), so it overlaps even where
                # conflicts happened; a retry goes directly where they did (``contended``).
                self.chooser.attempt = attempt
                try:
                    # Inside: waiting at its start (behind an exclusive operation) can make it
                    # a deadlock victim, which is as retryable as any conflict.
                    conn._backend.begin()
                    result = work()
                    conn.commit()
                    return result
                except ConflictError:
                    if conn._in_txn():
                        conn.rollback()
                    if attempt == retries:
                        raise
                except BaseException:
                    if conn._in_txn():
                        conn.rollback()
                    raise
                _backoff_jitter(attempt)
        finally:
            self.chooser.attempt = None
        raise AssertionError("unreachable")

    def is_open(self) -> bool:
        return self.txn is not None or self.aborted is not None or self.later is not None

    def abort(self, error: errors.OperationalError) -> None:
        """Roll the open transaction back on the application's behalf (it is doomed, and its
        locks are wanted) and remember why until the application ends it."""
        self.chooser.learn(error)
        self.rollback()
        self.aborted = error

    def end_aborted(self, *, commit: bool) -> None:
        """End a transaction :meth:`abort` rolled back: a rollback is what already
        happened; a commit fails, since nothing of it can be committed."""
        error, self.aborted = self.aborted, None
        if commit and error is not None:
            raise errors.still_aborted(error, "nothing was committed")

    def begin(self, *, by_savepoint: bool = False, immediate: bool | None = None) -> None:
        """Open a transaction.  Unless it can only run optimistically, how it runs is chosen
        at its first statement (:meth:`settle`), which the choice depends on."""
        self.thread = threading.get_ident()
        if self._owner.mode == "optimistic":
            self.begin_optimistic(by_savepoint=by_savepoint, immediate=immediate)
            self.chooser.began(ways.OPTIMISTIC, "")
        else:
            if immediate is None:
                immediate = self._owner._isolation_level in ("IMMEDIATE", "EXCLUSIVE")
            self.later = (by_savepoint, immediate)

    def settle(self, sql: str | None, kind: str) -> None:
        """Start the transaction BEGIN announced, the way its first statement ``sql`` (or,
        with ``None``, something other than a statement) calls for."""
        later, self.later = self.later, None
        assert later is not None and self.txn is None
        by_savepoint, immediate = later
        if sql is not None and self._may_run_direct(sql, kind, immediate):
            self.chooser.before_merge_lock()
            if self.on_merger.begin_direct(by_savepoint, immediate):
                self.chooser.began(ways.DIRECT, sql, started=not self.db.merge_lock.slept)
                return
        self.begin_optimistic(by_savepoint=by_savepoint, immediate=immediate)
        self.chooser.began(ways.OPTIMISTIC, sql or "")

    def _may_run_direct(self, sql: str, kind: str, immediate: bool) -> bool:
        """Whether to run directly from the first statement ``sql`` on."""
        if kind in ("exclusive", "attach", "detach") or (
            kind != "dml" and statements.may_change_schema(sql)  # DML never does
        ):
            return False  # an exclusive operation, or its own kind of statement
        if not self.chooser.prefers_direct(sql, kind, immediate):
            return False
        # Live table-level transactions: their locks cover tables the merger does not report.
        # An exclusive operation waiting or running: it goes first.
        return not self.db.lockdb.fast_path_closed() and not self.other_open_here()

    def other_open_here(self) -> bool:
        """Whether another connection's transaction is open in this thread: one that holds
        the merge lock would wait for this thread, and this one's would block its commit."""
        assert self._owner._holding is not None
        others = self._owner._holding.connections
        if len(others.data) == 1:  # this one: nearly always (a WeakSet's own len() is Python)
            return False
        me = threading.get_ident()
        return any(c._txns is not self and c._txns.thread == me and c._in_txn() for c in others)

    def begin_optimistic(
        self, *, by_savepoint: bool = False, immediate: bool | None = None
    ) -> WriteTransaction:
        self.thread = threading.get_ident()
        if immediate is None:
            immediate = self._owner._isolation_level in ("IMMEDIATE", "EXCLUSIVE")
        assert self._owner._snapshot_conn is not None  # not a private database
        try:
            waits.wake(self.db.lockdb, self.db.lockdb.end_unended())
            self.txn = WriteTransaction(
                path=self._owner.path,
                lockdb=self.db.lockdb,
                locking={
                    "level": self._owner._level,
                    "timeout": self._owner.timeout,
                    "escalate_at": self._owner._options.escalate_at,
                    "row_lock_delay": self._owner._options.row_lock_delay,
                    "publisher": self.db.publisher,
                    "reader": self._owner._reader,
                    "snapshot_reader": self._owner._snapshot_conn,
                },
                snapshot_conn=self._owner._snapshot_conn,
                wal_files=self.db.wal_files,
                slot=self.db.slot,
                connections=self._owner._txn_connection,
                snapshot_gate=self.db.checkpointer.gate,
                merge_lock=self.db.merge_lock,
                begin=not by_savepoint,
                immediate=immediate,
                journal=self.db.journal,
                denied=self._owner._denied,
                defer_foreign_keys=self._owner._deferral.take(),
            )
        except apsw.Error as e:
            raise translate(e) from e
        # Only a connection that chooses its ways runs a transaction again
        # (``Replays.may_run_again``).
        if self._owner.mode == "auto":
            self.script = rerun.Script(last_insert_rowid=self._owner._last_insert_rowid)
        return self.txn

    def detach_cursors(self) -> None:
        if not self.cursors:  # the usual case; iterating a WeakSet is not free
            return
        for cursor in list(self.cursors):
            cursor._detach_from_txn()
        self.cursors.clear()

    def rollback(self) -> None:
        self.chooser.learn()
        self._owner._deferral.end()
        if self.exclusive is not None:
            self.on_merger.finish_exclusive(commit=False)
            return
        txn, self.txn = self.txn, None
        assert txn is not None
        self.detach_cursors()
        try:
            txn.rollback()
        except apsw.Error as e:
            raise translate(e) from e

    def commit(self) -> None:
        """:raises IntegrityError: deferred foreign keys are violated; still open, as in SQLite."""
        txn = self.txn
        assert txn is not None
        excl = self.exclusive
        foreign_keys.check_commit(excl.conn if excl is not None else txn.connection)
        self.chooser.measure_body()
        if excl is None and self.db.merge_lock.held_by_this_thread():
            # Another connection's transaction in this thread holds the merge lock: as in
            # SQLite, the commit fails and the transaction stays open to try again.
            raise oslock.HeldByThisThreadError
        error: BaseException | None = None
        try:
            if excl is not None:  # direct, escalated or exclusive: SQLite's own COMMIT
                self._owner._deferral.end()
                self.on_merger.finish_exclusive(commit=True)
            else:
                self._commit_open()
        except BaseException as e:
            error = e
            raise
        finally:
            if self.txn is None:  # ended, committed or not
                self.chooser.learn(error)

    def _commit_open(self) -> None:
        txn = self.txn
        assert txn is not None and self.exclusive is None
        self._owner._deferral.end()
        self.txn = None
        self.detach_cursors()
        script, self.script = self.script, None
        pending = None
        committed = False
        conflict = None
        try:
            pending = txn.prepare(self._owner._table_shapes)
            if pending is not None:
                group = self.db.groups() and not self._owner._state.has_triggers
                if group:  # other mergers find it in the lock database
                    txn.ensure_registered()
                crashpoints.reach("commit.prepared")
                merge.commit(
                    self._owner._merger,
                    self.db.merge_lock,
                    self.db.lockdb,
                    self.db.journal,
                    pending,
                    group=group,
                )
                committed = True
        except ConflictError as e:
            if script is None or not script.statements or not self.replays.may_run_again(script):
                raise
            conflict = e
        except apsw.Error as e:
            raise translate(e) from e
        finally:
            self.end(txn, committed)
        if conflict is not None:
            assert script is not None
            self.replays.run_again(script, txn, conflict)
        elif pending is not None:
            self.after_merge()

    def end(self, txn: WriteTransaction, committed: bool) -> None:
        """End ``txn``.  Once it committed, the commit stands: failing to release its locks
        (the lock database's disk is full) is logged, and the release is retried by this
        connection's next transaction or its close."""
        try:
            txn.end(committed)
        except (apsw.Error, OSError) as e:
            if not committed:
                raise
            log.warning(
                "sqlite_concurrent: transaction %d committed, but releasing its locks failed "
                "(retried later): %s",
                txn.txn_id,
                translate(e) if isinstance(e, apsw.Error) else e,
            )

    def after_merge(self) -> None:
        """Housekeeping after a commit.  The commit has happened: nothing here may make
        ``commit()`` look as if it failed, so errors are logged, not raised."""
        try:
            self._housekeeping()
        except (apsw.Error, OSError) as e:
            log.warning("sqlite_concurrent: post-commit housekeeping failed: %s", e)

    def _housekeeping(self) -> None:
        if self._owner._reader_cursors.data:  # a WeakSet's own len() runs in Python
            for cursor in list(self._owner._reader_cursors):
                cursor._materialise()
            self._owner._reader_cursors.clear()
        self.db.after_merge()


def _backoff_jitter(attempt: int) -> None:
    """Sleep before retrying a conflicted transaction: random, growing, capped at 100 ms.  A
    retry backoff, not a lock wait: the next attempt's waits block in the kernel."""
    time.sleep(random.uniform(0, min(0.1, 0.001 * (2**attempt))))
