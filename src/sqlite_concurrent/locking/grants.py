"""Granting and queueing locks in the lock database, and breaking deadlocks (architecture.md, "Locks
and waiting").

Resources are ``db``, ``table:<name>``, ``page:<n>`` and ``row:<table>:<rowid>``, in modes S
and X.  A table lock covers its rows.  Every live transaction holds ``db`` in S mode without a
row for it (one write less per transaction): a ``db`` X request waits for all of them except
those queued for ``db`` in S mode, i.e. transactions that began after an exclusive operation
asked and wait at their start, before running anything (architecture.md, "Exclusive operations").
Requests queue first come, first served; the wait-for graph is searched whenever a request queues,
and the youngest transaction of a cycle is the victim.  The waiting itself (in the kernel) is
:mod:`.waits`.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import apsw

if TYPE_CHECKING:
    from .lockdb import LockDB

# Transaction states (the lock database's ``transactions.state``).
ACTIVE = "active"
COMMITTING = "committing"
READY = "ready"  # its merge record is in its journal; any merger may apply it
COMMITTED = "committed"  # a merger applied it; its owner has not acknowledged yet
CONFLICTED = "conflicted"  # a merger rejected it; ``outcome`` says why
DEADLOCK_VICTIM = "deadlock"
DIRECT = "direct"  # runs on its process's stock connection under the merge lock (ways.py)

_MINE = (
    "SELECT (SELECT mode FROM locks WHERE resource=? AND txn_id=?), "
    "(SELECT seq FROM waiters WHERE txn_id=? AND resource=?)"
)
# ?1 resource, ?2 txn, ?3 covering table, ?4/?5 row range of a table, ?6 the request's queue seq.
_BLOCKERS = """
SELECT l.txn_id, l.resource, l.mode, t.pid FROM locks l JOIN transactions t USING (txn_id)
 WHERE l.resource IN (?1, ?3) AND l.txn_id != ?2
UNION ALL
SELECT l.txn_id, l.resource, 'X', t.pid FROM locks l JOIN transactions t USING (txn_id)
 WHERE ?4 != '' AND l.resource >= ?4 AND l.resource < ?5 AND l.txn_id != ?2
UNION ALL
SELECT w.txn_id, w.resource, w.mode, t.pid FROM waiters w JOIN transactions t USING (txn_id)
 WHERE w.resource = ?1 AND w.txn_id != ?2 AND w.seq < ?6
UNION ALL
SELECT t.txn_id, 'db', 'S', t.pid FROM transactions t
 WHERE ?1 = 'db' AND t.txn_id != ?2
   AND NOT EXISTS (SELECT 1 FROM waiters w
                   WHERE w.txn_id = t.txn_id AND w.resource = 'db' AND w.mode = 'S')
"""

# Waiters with nothing in their way (``_BLOCKERS`` of each, all at once), and deadlock victims.
# A row's covering table: ``row:<table>:<rowid>`` without its integer (the table name may
# contain ':', the rowid never does).
_DUE = """
SELECT w.txn_id FROM waiters w
 WHERE NOT EXISTS (
        SELECT 1 FROM locks l JOIN transactions t USING (txn_id)
         WHERE l.txn_id != w.txn_id
           AND ((l.resource = w.resource AND (w.mode = 'X' OR l.mode = 'X'))
                OR (substr(w.resource, 1, 4) = 'row:'
                    AND l.resource = 'table:' || substr(rtrim(w.resource, '0123456789-'), 5,
                                                  length(rtrim(w.resource, '0123456789-')) - 5))
                OR (substr(w.resource, 1, 6) = 'table:'
                    AND l.resource >= 'row:' || substr(w.resource, 7) || ':'
                    AND l.resource < 'row:' || substr(w.resource, 7) || ';')))
   AND NOT EXISTS (
        SELECT 1 FROM waiters e JOIN transactions t USING (txn_id)
         WHERE e.resource = w.resource AND e.txn_id != w.txn_id AND e.seq < w.seq
           AND (w.mode = 'X' OR e.mode = 'X'))
   AND NOT (w.resource = 'db' AND w.mode = 'X' AND EXISTS (
        SELECT 1 FROM transactions t
         WHERE t.txn_id != w.txn_id
           AND NOT EXISTS (SELECT 1 FROM waiters d WHERE d.txn_id = t.txn_id
                           AND d.resource = 'db' AND d.mode = 'S')))
UNION
SELECT txn_id FROM transactions WHERE state = ?1 AND txn_id IN (SELECT txn_id FROM waiters)
"""

# Whether anybody can be waiting for a transaction that has just queued: only if it holds a
# lock, or an exclusive operation waits (every live transaction keeps ``db`` X waiting).  If
# not, its wait closes no cycle, and the wait-for graph (a query per waiter) is not built.
_WAITED_FOR = """
SELECT 1 FROM locks WHERE txn_id = ?1
UNION ALL
SELECT 1 FROM waiters WHERE resource = 'db' AND mode = 'X' AND txn_id != ?1
LIMIT 1
"""

# The uncontended fast path: grant in one statement when nothing conflicts and nobody queues.
# ?1 resource, ?2 txn, ?3 mode, ?4 now, ?5 covering table, ?6/?7 row range of a table.
_FAST_GRANT = """
INSERT INTO locks(resource, txn_id, mode, granted_at)
SELECT ?1, ?2, ?3, ?4
 WHERE NOT EXISTS (SELECT 1 FROM locks WHERE resource = ?1 AND txn_id != ?2
                   AND (mode = 'X' OR ?3 = 'X'))
   AND NOT EXISTS (SELECT 1 FROM locks WHERE resource = ?5 AND txn_id != ?2)
   AND NOT EXISTS (SELECT 1 FROM locks WHERE ?6 != '' AND resource >= ?6 AND resource < ?7
                   AND txn_id != ?2)
   AND NOT EXISTS (SELECT 1 FROM waiters WHERE resource = ?1 AND txn_id != ?2)
ON CONFLICT(resource, txn_id) DO UPDATE SET mode = max(mode, excluded.mode)
"""

# The same for a row: only its own holders, its table's lock and its queue matter.
# Rows are only ever locked X, so no upsert: measured 11 us against 30 us with ON CONFLICT DO
# UPDATE.  A row this transaction already holds is not granted here (the caller does not ask).
_FAST_GRANT_ROW = """
INSERT OR IGNORE INTO locks(resource, txn_id, mode, granted_at)
SELECT ?1, ?2, ?3, ?4
 WHERE NOT EXISTS (SELECT 1 FROM locks WHERE resource IN (?1, ?5) AND txn_id != ?2)
   AND NOT EXISTS (SELECT 1 FROM waiters WHERE resource = ?1 AND txn_id != ?2)
"""

# ``db`` in X mode: every other live transaction holds it in S mode implicitly.
_FAST_GRANT_DB_X = """
INSERT INTO locks(resource, txn_id, mode, granted_at)
SELECT 'db', ?1, 'X', ?2
 WHERE NOT EXISTS (SELECT 1 FROM transactions t WHERE t.txn_id != ?1
                   AND NOT EXISTS (SELECT 1 FROM waiters w WHERE w.txn_id = t.txn_id
                                   AND w.resource = 'db' AND w.mode = 'S'))
   AND NOT EXISTS (SELECT 1 FROM locks WHERE resource = 'db' AND txn_id != ?1)
   AND NOT EXISTS (SELECT 1 FROM waiters WHERE resource = 'db' AND txn_id != ?1)
ON CONFLICT(resource, txn_id) DO UPDATE SET mode = 'X'
"""


# A transaction registers late (with its first written lock), under an id it reserved.
_REGISTER = (
    "INSERT OR IGNORE INTO transactions(txn_id, pid, lock_level, state, began_at) "
    f"VALUES (?, ?, ?, '{ACTIVE}', ?)"
)


@dataclass(frozen=True)
class Blocker:
    """A transaction standing between a request and its grant."""

    txn_id: int
    pid: int
    resource: str
    mode: str


class Victim(Exception):  # noqa: N818 - a signal, not an error
    """This transaction was chosen to break a deadlock; ``cycle`` lists the transactions.

    ``wake``: waiters to nudge, since leaving the queue may unblock them (or leave another
    cycle for them to find).
    """

    def __init__(self, cycle: list[int], resource: str, wake: list[int] | None = None) -> None:
        super().__init__(cycle, resource)
        self.cycle = cycle
        self.resource = resource
        self.wake = wake or []


def _conflicts(a: str, b: str) -> bool:
    return a == "X" or b == "X"


def _table_of_row(resource: str) -> str:
    # row:<table>:<rowid>; the rowid is an integer, the table name may contain ':'.
    return resource[4:].rsplit(":", 1)[0]


def _find_cycle(graph: dict[int, set[int]], start: int) -> list[int]:
    """A cycle of the wait-for graph through ``start``, or []."""
    path: list[int] = []
    on_path: set[int] = set()
    seen: set[int] = set()

    def visit(node: int) -> list[int]:
        path.append(node)
        on_path.add(node)
        for nxt in graph.get(node, ()):
            if nxt == start:
                return list(path)
            if nxt not in seen and nxt not in on_path:
                seen.add(nxt)
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        on_path.discard(node)
        return []

    return visit(start)


class Grants:
    """Granting, queueing and deadlock breaking in the lock database ``lockdb`` (its
    ``grants``), under its write guard."""

    def __init__(self, lockdb: LockDB) -> None:
        self._db = weakref.proxy(lockdb)  # its owner: no reference cycle
        self._hot_cursor: apsw.Cursor | None = None

    def fast_grant(
        self,
        txn_id: int,
        requests: list[tuple[str, str]],
        *,
        register: tuple[str, float] | None = None,
    ) -> int:
        """Grant requests in order while nothing conflicts; returns how many were granted.

        ``register``: (lock level, began at) of a transaction not yet in the lock database; it
        is registered in the same write, whatever is granted.
        """
        c = self._db.conn
        now = time.time()
        granted = 0
        self._db._guard.acquire()
        try:
            if len(requests) == 1 and register is None:  # one statement, no BEGIN/COMMIT
                resource, mode = requests[0]
                self._grant_one(resource, txn_id, mode, now)
                return c.changes()
            c.execute("BEGIN IMMEDIATE")
            try:
                if register is not None:
                    self._cursor().execute(_REGISTER, (txn_id, self._db.pid, *register))
                for resource, mode in requests:
                    self._grant_one(resource, txn_id, mode, now)
                    if not c.changes():
                        break
                    granted += 1
            except BaseException:
                c.execute("ROLLBACK")
                raise
            c.execute("COMMIT")
            return granted
        finally:
            self._db._guard.release()

    def claimed_by_others(self, txn_id: int, requests: list[tuple[str, str]]) -> bool:
        """Whether another transaction holds or awaits one of these row locks (or holds its
        table's lock): a read, where granting them would be a write."""
        if self._db.quiet():
            return False
        rows = [r for r, _ in requests]
        held = [*rows, *{"table:" + _table_of_row(r) for r in rows}]
        return (
            self._db.conn.execute(
                f"SELECT 1 FROM locks WHERE resource IN ({','.join('?' * len(held))}) "
                "AND txn_id != ? UNION ALL SELECT 1 FROM waiters "
                f"WHERE resource IN ({','.join('?' * len(rows))}) AND txn_id != ? LIMIT 1",
                [*held, txn_id, *rows, txn_id],
            ).fetchone()
            is not None
        )

    def register(self, txn_id: int, lock_level: str, began_at: float) -> None:
        """Register a transaction that began under a reserved id, before it waits for
        anything."""
        self._db._guard.acquire()
        try:
            self._cursor().execute(_REGISTER, (txn_id, self._db.pid, lock_level, began_at))
        finally:
            self._db._guard.release()

    def _grant_one(self, resource: str, txn_id: int, mode: str, now: float) -> None:
        # One reused cursor: a new one per statement is half a microsecond of a ~13 us write.
        cur = self._cursor()
        if resource.startswith("row:"):  # rows are always X
            table = "table:" + _table_of_row(resource)
            cur.execute(_FAST_GRANT_ROW, (resource, txn_id, mode, now, table))
        elif resource == "db" and mode == "X":
            cur.execute(_FAST_GRANT_DB_X, (txn_id, now))
        else:
            cur.execute(_FAST_GRANT, (resource, txn_id, mode, now, *_related(resource)))

    def _cursor(self) -> apsw.Cursor:
        cur = self._hot_cursor
        if cur is None:
            cur = self._hot_cursor = self._db.conn.cursor()
        return cur

    def _blockers(
        self, c: apsw.Connection, txn_id: int, resource: str, mode: str, seq: int | None
    ) -> list[Blocker]:
        """Who keeps ``txn_id`` from holding ``resource`` in ``mode`` right now.

        One query, since this runs on every lock request: holders of the resource, holders of
        a covering table lock (for a row) or of any of the table's rows (for a table), and
        earlier waiters for the resource (first come, first served).
        """
        related = _related(resource)
        found: dict[int, tuple[str, int]] = {}
        for other, where, held, pid in c.execute(
            _BLOCKERS,
            (resource, txn_id, *related, seq if seq is not None else 1 << 62),
        ):
            if where != resource or _conflicts(mode, held):
                found.setdefault(other, (where, pid))
        return [Blocker(t, pid, where, mode) for t, (where, pid) in found.items()]

    def due(self, candidates: list[int]) -> list[int]:
        """Of the waiting ``candidates``, those a wake-up may let go on: nothing blocks their
        request now (as :meth:`_blockers` tells), or they were picked as deadlock victims.
        Read without writing, after the change that calls for the wake-up has committed: a
        waiter still blocked is woken by whoever ends what blocks it, who reads after its own
        change.  (No waiter is left in a wait-for cycle: see :meth:`_break_deadlock`.)

        Waking every waiter cost each hand-off of a hot lock one look per waiter, each in a
        process of its own; here one query decides.
        """
        c = self._db.conn
        guard = self._db._guard
        guard.acquire_in_process()
        try:
            due = {t for (t,) in c.execute(_DUE, (DEADLOCK_VICTIM,))}
        finally:
            guard.release_in_process()
        return [t for t in candidates if t in due]

    def try_acquire(
        self,
        txn_id: int,
        requests: list[tuple[str, str]],
        *,
        queue: bool,
        same_thread: frozenset[int] = frozenset(),
    ) -> tuple[list[Blocker], list[int]]:
        """Grant ``(resource, mode)`` requests in order, stopping at the first that is blocked.

        With ``queue`` the blocked request is recorded in ``waiters`` (first come, first served)
        and the wait-for graph is checked for a cycle through this transaction.
        ``same_thread`` are transactions run by the calling thread, which cannot be waited for:
        a row they hold is skipped (the merge still checks it), any other lock is a deadlock.

        :returns: the blockers of the first blocked request (empty when all were granted) and
            the transactions to wake.
        :raises Victim: this transaction must roll back to break a deadlock.
        """
        c = self._db.conn
        self._db._guard.acquire()
        try:
            c.execute("BEGIN IMMEDIATE")
            try:
                if queue:  # only a queued waiter can have been picked as a deadlock victim
                    _raise_if_victim(c, txn_id)
                blockers, wake = self._in_order(c, txn_id, requests, queue, same_thread)
            except Victim:
                c.execute("COMMIT")
                raise
            except BaseException:
                c.execute("ROLLBACK")
                raise
            c.execute("COMMIT")
        finally:
            self._db._guard.release()
        return blockers, wake

    def _in_order(
        self,
        c: apsw.Connection,
        txn_id: int,
        requests: list[tuple[str, str]],
        queue: bool,
        same_thread: frozenset[int],
    ) -> tuple[list[Blocker], list[int]]:
        """``try_acquire``'s grants, inside its write transaction."""
        wake: list[int] = []
        blockers: list[Blocker] = []
        for resource, mode in requests:
            held, seq = c.execute(_MINE, (resource, txn_id, txn_id, resource)).fetchone()
            if held is not None and (held == "X" or mode == "S"):
                continue
            blockers = self._blockers(c, txn_id, resource, mode, seq)
            own = [b for b in blockers if b.txn_id in same_thread]
            if own:
                if resource.startswith("row:") and len(own) == len(blockers):
                    blockers = []
                    continue
                c.execute("DELETE FROM waiters WHERE txn_id=?", (txn_id,))
                raise Victim([txn_id, own[0].txn_id], resource, others_waiting(c, txn_id))
            if blockers:
                if queue:
                    if seq is None:
                        c.execute(
                            "INSERT INTO waiters(txn_id, resource, mode, since) "
                            "VALUES (?, ?, ?, ?)",
                            (txn_id, resource, mode, time.time()),
                        )
                        if resource == "db":
                            # Queued behind an exclusive operation, it no longer keeps that one
                            # waiting (_BLOCKERS), which must look again.
                            wake = _db_waiters(c, txn_id)
                    if seq is not None or c.execute(_WAITED_FOR, (txn_id,)).fetchone():
                        wake = wake + self._break_deadlock(c, txn_id, resource)
                break
            c.execute(
                "INSERT INTO locks(resource, txn_id, mode, granted_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(resource, txn_id) DO UPDATE SET mode=excluded.mode",
                (resource, txn_id, mode, time.time()),
            )
            if seq is not None:
                # A holder blocks whom it blocked in line (``_BLOCKERS``): nobody to wake.
                c.execute("DELETE FROM waiters WHERE seq=?", (seq,))
        return blockers, wake

    def _wait_for_graph(self, c: apsw.Connection) -> dict[int, set[int]]:
        graph: dict[int, set[int]] = {}
        for waiter, resource, mode, seq in c.execute(
            "SELECT txn_id, resource, mode, seq FROM waiters ORDER BY seq"
        ).fetchall():
            for b in self._blockers(c, waiter, resource, mode, seq):
                graph.setdefault(waiter, set()).add(b.txn_id)
        return graph

    def _break_deadlock(self, c: apsw.Connection, txn_id: int, resource: str) -> list[int]:
        """If waiting closes cycles, pick the youngest transaction of each as its victim.

        Every cycle its wait closes runs through this transaction, and each is broken here:
        a victim picked for one (say a waiter between two that wait for each other) need not
        break another, and releases wake only waiters that can go on (:meth:`due`), so a cycle
        left in place would wait out its timeouts.
        """
        graph = self._wait_for_graph(c)
        victims: list[int] = []
        while cycle := _find_cycle(graph, txn_id):
            # The youngest: ids are reserved in batches per process, so they do not say which
            # began last; the time each began does.
            began = dict(
                c.execute(
                    "SELECT txn_id, began_at FROM transactions "
                    f"WHERE txn_id IN ({','.join('?' * len(cycle))})",
                    cycle,
                )
            )
            victim = max(cycle, key=lambda t: (began.get(t, 0.0), t))
            if victim == txn_id:  # its leaving breaks them all: nobody else need go
                c.execute("DELETE FROM waiters WHERE txn_id=?", (txn_id,))
                raise Victim(cycle, resource, others_waiting(c, txn_id))
            victims.append(victim)
            # It leaves the queue once woken: it waits for nobody now.
            graph.pop(victim, None)
            for waited_for in graph.values():
                waited_for.discard(victim)
        for victim in victims:
            c.execute("UPDATE transactions SET state=? WHERE txn_id=?", (DEADLOCK_VICTIM, victim))
        return victims

    def stop_waiting(self, txn_id: int) -> list[int]:
        with self._db.writing() as c:
            c.execute("DELETE FROM waiters WHERE txn_id=?", (txn_id,))
            return others_waiting(c, txn_id) if c.changes() else []


def others_waiting(c: apsw.Connection, txn_id: int) -> list[int]:
    # Every waiter a change may concern (resources are related: a table lock blocks its rows);
    # ``Grants.due`` narrows them to those that can go on, once the change has committed.
    return [
        t for (t,) in c.execute("SELECT DISTINCT txn_id FROM waiters WHERE txn_id != ?", (txn_id,))
    ]


def _related(resource: str) -> tuple[str, str, str]:
    """(covering table lock, row range start, row range end) that a request must respect."""
    if resource.startswith("row:"):
        return ("table:" + _table_of_row(resource), "", "")
    if resource.startswith("table:"):
        prefix = "row:" + resource[6:] + ":"
        return ("", prefix, prefix[:-1] + ";")
    return ("", "", "")


def _db_waiters(c: apsw.Connection, txn_id: int) -> list[int]:
    return [
        t
        for (t,) in c.execute(
            "SELECT txn_id FROM waiters WHERE resource = 'db' AND mode = 'X' AND txn_id != ?",
            (txn_id,),
        )
    ]


def _raise_if_victim(c: apsw.Connection, txn_id: int) -> None:
    """:raises Victim: another transaction's request picked this waiting one as the victim
    of a deadlock; it leaves the queue and is active again (to roll back)."""
    state = c.execute("SELECT state FROM transactions WHERE txn_id=?", (txn_id,)).fetchone()
    if state and state[0] == DEADLOCK_VICTIM:
        resource = c.execute("SELECT resource FROM waiters WHERE txn_id=?", (txn_id,)).fetchone()
        c.execute("DELETE FROM waiters WHERE txn_id=?", (txn_id,))
        c.execute("UPDATE transactions SET state=? WHERE txn_id=?", (ACTIVE, txn_id))
        raise Victim([txn_id], resource[0] if resource else "", others_waiting(c, txn_id))
