"""The commit queue in the lock database (architecture.md, "Journals, group commit and commit
markers").

A transaction that waits to commit is marked ready, with where its merge record is in its
journal; whoever holds the merge lock next applies every ready transaction it can read and
records each one's outcome, which its owner reads.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from .grants import COMMITTED, CONFLICTED, READY

if TYPE_CHECKING:
    from .lockdb import LockDB


class CommitQueue:
    """The lock database ``lockdb``'s commit queue (its ``queue``)."""

    def __init__(self, lockdb: LockDB) -> None:
        self._db = weakref.proxy(lockdb)  # its owner: no reference cycle

    def mark_ready(self, txn_id: int, journal: str, offset: int, length: int) -> None:
        """The transaction waits to commit; its merge record is in ``journal``."""
        self._db._write_one(
            "UPDATE transactions SET state = ?, journal = ?, journal_offset = ?, "
            "journal_length = ? WHERE txn_id = ?",
            (READY, journal, offset, length, txn_id),
        )

    def ready(self, limit: int) -> list[tuple[int, str, int, int]]:
        """Transactions waiting to commit, oldest first: (txn_id, journal, offset, length)."""
        return list(
            self._db.conn.execute(
                "SELECT txn_id, journal, journal_offset, journal_length FROM transactions "
                "WHERE state = ? ORDER BY txn_id LIMIT ?",
                (READY, limit),
            )
        )

    def outcome(self, txn_id: int) -> tuple[str, bytes | None] | None:
        row = self._db.conn.execute(
            "SELECT state, outcome FROM transactions WHERE txn_id = ?", (txn_id,)
        ).fetchone()
        return None if row is None else (row[0], row[1])

    def record_outcomes(self, outcomes: dict[int, bytes | None]) -> None:
        """What a merger decided for each transaction of its group (``None``: committed)."""
        with self._db.writing() as c:
            c.executemany(
                "UPDATE transactions SET state = ?, outcome = ? WHERE txn_id = ? AND state = ?",
                [
                    (COMMITTED if o is None else CONFLICTED, o, txn_id, READY)
                    for txn_id, o in outcomes.items()
                ],
            )
