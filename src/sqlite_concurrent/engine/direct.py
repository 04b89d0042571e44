"""A write transaction run directly (:mod:`.ways`): stock SQLite's own transaction on the
merger, under the merge lock from its first statement to its end.

No snapshot, overlay, session, changeset, journal record or commit marker: its own process
commits it and learns the outcome from SQLite at once.  To every optimistic transaction it
looks like a merge that happened when it committed, which their validation (written rows at
the row level, read pages at the page level, table versions at the table level) already
handles.  The merger's write transaction and the merge lock are held by an
:class:`~.exclusive.Exclusive`, which runs the statements of exclusive operations the same way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ..locking import waits
from ..locking.levels import Level
from ..locking.lockdb import LockDB
from ..locking.publisher import Publisher
from . import savepoints

# A direct transaction still open this long after it began is shown in the lock database
# (``sqlite-concurrent status``); the rest, nearly all, never write to it.
SHOW_AFTER = 0.05


class Watch:
    """Per connection: shows its direct transaction once it has been open ``SHOW_AFTER``.

    One item in the publisher at a time, whatever the number of transactions: each looks at
    the transaction open when it falls due, and comes back for a younger one.  Scheduling one
    per transaction cost about 10 us of a 165 us direct transaction, most of it in the
    publisher's thread, which then woke for thousands of transactions that had long ended.
    """

    def __init__(self, current: Callable[[], DirectTransaction | None]) -> None:
        self._current = current  # the connection's open direct transaction, if any
        self.pending = False  # an item of this watch is in the publisher
        self._lock = threading.Lock()  # against the publisher's thread
        self._publisher: Publisher | None = None

    def began(self, publisher: Publisher) -> None:
        """A direct transaction is now the connection's open one."""
        if self.pending:  # the item in the publisher will find it
            return
        with self._lock:
            if not self.pending:
                self.pending = True
                self._publisher = publisher
                publisher.schedule(self, SHOW_AFTER)

    def publish(self, lockdb: Callable[[], LockDB]) -> None:
        """From the publisher's thread."""
        with self._lock:
            self.pending = False
            txn = self._current()
            if txn is None:
                return
            left = txn.began_at + SHOW_AFTER - time.time()
            if left > 0:
                assert self._publisher is not None
                self.pending = True
                self._publisher.schedule(self, left)
                return
        txn.publish(lockdb)


class DirectTransaction:
    """What the connection keeps of a direct transaction besides its :class:`Exclusive`."""

    def __init__(
        self,
        *,
        txn_id: int | None = None,
        level: Level,
        lockdb: LockDB,
        begun_by_savepoint: bool,
        defer_foreign_keys: bool,
    ) -> None:
        # Drawn only if it is shown: a direct transaction appears nowhere else, and ids are
        # reserved with a write to the lock database, whose changed header costs every other
        # process a query at its next direct transaction.
        self.txn_id = txn_id
        self.level = level
        self._lockdb = lockdb
        self.began_at = time.time()
        self._mutex = threading.Lock()  # against the publisher's thread
        self._state = "open"  # then "shown" (in the lock database) and "ended"
        self.savepoints = savepoints.Stack(begun_by_savepoint=begun_by_savepoint)
        self.saved: savepoints.Saved | None = None
        self.defer_foreign_keys = defer_foreign_keys
        # Set by a statement that may have changed a schema: the other connections then read
        # theirs again when it ends.
        self.schema_changed = False

    def publish(self, lockdb: Callable[[], LockDB]) -> None:
        """From the publisher's thread (:class:`Watch`), ``SHOW_AFTER`` after it began."""
        with self._mutex:
            if self._state == "open":
                if self.txn_id is None:
                    self.txn_id = self._lockdb.next_id()
                lockdb().show_direct(self.txn_id, self.level.name, self.began_at)
                self._state = "shown"

    def end(self, committed: bool) -> None:
        with self._mutex:
            shown = self._state == "shown"
            self._state = "ended"
        if shown:
            assert self.txn_id is not None
            waits.wake(self._lockdb, self._lockdb.end(self.txn_id))
