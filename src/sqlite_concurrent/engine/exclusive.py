"""Exclusive operations (architecture.md, "Exclusive operations").

What a changeset cannot carry (DDL, VACUUM, ANALYZE, REINDEX, pragmas that write the header)
runs on the stock merger connection while its transaction holds the ``db`` lock in X mode.
Taking it waits, first come first served and bounded by the connection's timeout, until every
other live transaction has ended; transactions that begin meanwhile wait at their start.  So no
live transaction's snapshot predates the schema change, and nobody's work is broken or dropped.

A transaction that has already written through its overlay when it meets such a statement
becomes exclusive: its changeset so far is applied on the merger, inside a write transaction
that stays open (under the merge lock) until commit or rollback, and its remaining statements
run there, on the latest database.  Its open savepoints are opened again there, each over the
work it covers (:mod:`.savepoints`).
"""

from __future__ import annotations

import apsw

from .. import crashpoints
from ..commit import drain, merge
from ..errors import OperationalError
from ..locking import oslock, waits
from ..locking.lockdb import LockDB
from . import savepoints


def wait_for_db(lockdb: LockDB, txn_id: int, timeout: float) -> None:
    """Hold ``db`` in X mode: every other live transaction has ended, new ones wait.

    :raises LockTimeoutError: transactions were still live after ``timeout`` seconds.
    :raises DeadlockError: one of them waits for this one.
    """
    waits.acquire(lockdb, txn_id, [("db", "X")], timeout)


class Exclusive:
    """An exclusive transaction's write transaction on the merger, under the merge lock."""

    def __init__(
        self,
        conn: apsw.Connection,
        lock: oslock.ByteLock,
        pending: merge.Pending | None,
        saved: savepoints.Saved | None = None,
        *,
        enforce_foreign_keys: bool | None = None,
        locked: bool = False,
        begin: str = "BEGIN IMMEDIATE",
        reads: merge.PageCheck | None = None,
    ) -> None:
        """``enforce_foreign_keys``: the application's setting, when ``pending`` does not carry
        it (a merge of another process's transaction may have left the merger with theirs).
        ``locked``: the caller holds the merge lock already; it is released with this.
        ``begin``: plain ``BEGIN`` locks attached databases only as statements use them, as
        the stdlib's deferred transaction does (the merge lock keeps our writers out).
        ``reads``: pages that must not have changed since the snapshot they were read in,
        checked once the write transaction has begun (:class:`ConflictError` otherwise)."""
        self.conn = conn
        self._lock = lock
        # Whether the other connections must read the schema again when it ends: always
        # for an exclusive operation; a direct transaction says when a statement may have.
        self.schema_changed = True
        if pending is not None:
            enforce_foreign_keys = pending.foreign_keys
        if enforce_foreign_keys is not None and merge.foreign_keys(conn) != enforce_foreign_keys:
            conn.pragma("foreign_keys", enforce_foreign_keys)  # as merge.merge does
        if not locked:
            lock.acquire()
        try:
            conn.execute(begin)
            try:
                if reads is not None:
                    merge.validate_pages(conn, reads)
                base = merge.counters(conn) if saved is not None else {}
                if pending is not None:
                    merge.apply_one(conn, pending)
                if saved is not None:
                    changeset = pending.changeset if pending is not None else b""
                    savepoints.restore(conn, changeset, saved, base)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except BaseException:
            lock.release()
            raise

    @property
    def open(self) -> bool:
        """False once SQLite rolled the transaction back by itself (after some errors)."""
        return self.conn.in_transaction

    def finish(self, commit: bool) -> bool:
        """Commit or roll back, and let go of the merge lock.

        :returns: whether it committed.
        """
        conn = self.conn
        try:
            if not commit:
                return False
            if not conn.in_transaction:
                raise OperationalError(
                    "cannot commit: SQLite rolled the transaction back after an error"
                )
            conn.execute("COMMIT")
            crashpoints.reach("direct.committed")
            return True
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._lock.release()
            # A restart checkpoint that found the merge lock taken tries again now (architecture.md,
            # "Checkpoints").
            drain.released(self._lock.path)
