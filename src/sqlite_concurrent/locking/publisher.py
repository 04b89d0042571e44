"""Deferred row locks: made visible a moment after the statement that took them.

At the ``row`` level a lock only makes another writer of the same row wait early instead of doing
work that the merge would reject (architecture.md, "Locks and waiting"); the merge's conflict check
is what keeps data correct.  Writing each statement's row locks to the lock database at once cost
two of the four lock-database writes of a two-row transaction, and kept the run 25-45% below what it
reached without them (measured: 8 writers, transfers).  Most transactions commit within a
millisecond of their last statement, when nobody could have waited for those locks yet.

So a statement's row locks are queued here, per process and database (the process's
:class:`~.holding.Holding` owns the publisher), and written by this module's thread ``delay``
seconds later unless the transaction has finished by then.  A transaction that waits for a
lock itself, or turns exclusive, writes all of its locks first
(:meth:`.locks.Locking.acquire_pending`), so the wait-for graph still has every edge a deadlock
needs.  A lock that cannot be granted when its time comes is left to its transaction, which
waits for it at its next statement.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

import apsw

from .lockdb import LockDB

log = logging.getLogger("sqlite_concurrent")


class Deferred(Protocol):
    def publish(self, lockdb: Callable[[], LockDB]) -> None: ...


class Publisher:
    """The thread that writes deferred locks for one process and database.

    Waking a thread costs far more than the check it makes (measured: two wake-ups per
    transaction, one to arm a timer and one when it fires, took a fifth of the throughput of
    8 writers on 2 cores), so the thread does not wake per transaction: while there is work it
    wakes every ``TICK`` seconds and publishes what has been waiting ``delay`` or longer, and it
    only needs waking when it has gone idle.  A lock is therefore visible ``delay`` to
    ``delay + TICK`` seconds after its statement.

    Even a wake-up every 5 ms was about one per transaction per process at 8 writers, nearly
    all of them finding only transactions that had ended; 25 ms measured 9% more transfers
    (1,571 against 1,442 txn/s, five alternating pairs) and delays a lock's visibility to a
    transaction that holds it that long anyway.
    """

    TICK = 0.025
    LINGER = 4  # empty ticks before it goes idle

    def __init__(self, db_path: str) -> None:
        self._db_path = db_path
        self._cond = threading.Condition()
        self._due: list[tuple[float, int, Deferred]] = []  # the thread's own heap
        # New items: appended without the condition's lock (a deque's append is atomic), and
        # moved into the heap by the thread.  Scheduling is then an append on every writing
        # transaction instead of a lock, a heap push and a clock read under it.
        self._new: collections.deque[tuple[float, int, Deferred]] = collections.deque()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._idle = False
        self._stopped = False
        # The thread's own connection to the lock database, opened on first real use; an
        # attribute, not a local, so that a forked child can find and settle it (holding.py).
        self.lockdb: LockDB | None = None

    def schedule(self, item: Deferred, delay: float) -> None:
        """Call ``item.publish(lockdb)`` from the publisher thread in ``delay`` seconds (or up
        to ``TICK`` later)."""
        self._new.append((time.monotonic() + delay, next(self._seq), item))
        # Read after the append: a thread about to idle looks at ``_new`` again after setting
        # ``_idle`` (see ``_next_due``), so one of the two always sees the other.
        if self._thread is None or self._idle:
            with self._cond:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run,
                        name=f"sqlite_concurrent-locks {self._db_path}",
                        daemon=True,
                    )
                    self._thread.start()
                elif self._idle:
                    self._cond.notify()

    def _next_due(self) -> list[Deferred] | None:
        """Wait for the next items that are due; ``None`` once nobody uses this publisher."""
        empty = 0
        with self._cond:
            while True:
                now = time.monotonic()
                while self._new:
                    heapq.heappush(self._due, self._new.popleft())
                if self._stopped:
                    # Every connection closed, so every transaction ended: nothing to write.
                    self._due.clear()
                    self._new.clear()
                    self._thread = None
                    return None
                if self._due and self._due[0][0] <= now:
                    break
                if self._due:
                    empty = 0
                    self._cond.wait(max(self._due[0][0] - now, self.TICK))
                elif empty < self.LINGER:
                    empty += 1
                    self._cond.wait(self.TICK)
                else:
                    self._idle = True
                    if not self._new:  # else one arrived before it could see _idle
                        self._cond.wait()
                    self._idle = False
                    empty = 0
            due = []
            while self._due and self._due[0][0] <= now:
                due.append(heapq.heappop(self._due)[2])
            return due

    def _run(self) -> None:
        def opened() -> LockDB:
            # Opened on first real use, not when the first item falls due: opening takes the
            # lock database's write guard, and most items are transactions that already ended.
            if self.lockdb is None:
                self.lockdb = LockDB(self._db_path)
            return self.lockdb

        try:
            while (due := self._next_due()) is not None:
                for item in due:
                    try:
                        item.publish(opened)
                    except (apsw.Error, OSError) as e:
                        # The locks stay with their transaction, which takes them itself at
                        # its next statement; the merge decides either way.
                        log.warning("sqlite_concurrent: could not publish row locks: %s", e)
        finally:
            lockdb, self.lockdb = self.lockdb, None
            if lockdb is not None:
                lockdb.close()

    def stop(self) -> None:
        """Every connection to the database has closed: end the thread, and return once it
        has ended and closed its lock-database connection."""
        with self._cond:
            self._stopped = True
            thread = self._thread  # it ends only after seeing ``_stopped``, set just now
            self._cond.notify()
        if thread is not None:
            thread.join()
