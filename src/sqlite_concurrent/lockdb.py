"""The lock database ``<db>-locks``: who holds what.

A plain SQLite database, queryable from any sqlite3 shell.  It only has to survive process
crashes (after a machine crash every holder is dead), hence WAL with ``synchronous=OFF``.
Every write runs under a kernel-blocking byte lock, so writers queue in the kernel rather than
in SQLite's sleeping busy handler (DESIGN section 5).

Schema (version 1).  ``locks`` and ``waiters`` are already here so the lock levels can use them:

- ``holders(pid, start_time, ...)``: processes with open connections; ``start_time`` tells a live
  process from a dead one whose pid was reused.
- ``transactions(txn_id, pid, lock_level, state, ...)``: live write transactions; ``txn_id`` is
  also the commit marker's key in the main database, so it never repeats.
- ``locks(resource, txn_id, mode)``: resources are ``db``, ``table:<name>``, ``page:<n>`` and
  ``row:<table>:<key>``; modes ``S`` and ``X``.
- ``waiters(seq, txn_id, resource, mode)``: ``seq`` orders waiters first come, first served.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import apsw

from . import oslock

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS holders(
    pid INTEGER PRIMARY KEY,
    start_time INTEGER NOT NULL,
    registered_at REAL NOT NULL,
    argv TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS transactions(
    txn_id INTEGER PRIMARY KEY AUTOINCREMENT,
    pid INTEGER NOT NULL,
    lock_level TEXT NOT NULL,
    state TEXT NOT NULL,
    began_at REAL NOT NULL,
    snapshot_frame INTEGER
);
CREATE INDEX IF NOT EXISTS transactions_pid ON transactions(pid);
CREATE TABLE IF NOT EXISTS locks(
    resource TEXT NOT NULL,
    txn_id INTEGER NOT NULL,
    mode TEXT NOT NULL CHECK (mode IN ('S', 'X')),
    granted_at REAL NOT NULL,
    PRIMARY KEY (resource, txn_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS locks_txn ON locks(txn_id);
CREATE TABLE IF NOT EXISTS waiters(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    txn_id INTEGER NOT NULL,
    resource TEXT NOT NULL,
    mode TEXT NOT NULL,
    since REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS waiters_resource ON waiters(resource, seq);
CREATE INDEX IF NOT EXISTS waiters_txn ON waiters(txn_id);
CREATE TABLE IF NOT EXISTS table_versions(
    name TEXT PRIMARY KEY,
    version INTEGER NOT NULL
) WITHOUT ROWID;
"""

_END_TXN = (
    "DELETE FROM locks WHERE txn_id=?; DELETE FROM waiters WHERE txn_id=?; "
    "DELETE FROM transactions WHERE txn_id=?"
)
_BUMP_VERSION = (
    "INSERT INTO table_versions(name, version) VALUES (?, 1) "
    "ON CONFLICT(name) DO UPDATE SET version = version + 1"
)

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

# Transaction states.
ACTIVE = "active"
COMMITTING = "committing"
DEADLOCK_VICTIM = "deadlock"


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


def process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (Linux), or ``None`` if it is gone.

    A zombie (killed, not yet waited for) counts as gone: it will never release anything.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return None
    except OSError:
        return 0
    # The command name (field 2) may contain spaces or parentheses: split after the last ')'.
    fields = stat[stat.rfind(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


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


def holder_alive(pid: int, start_time: int) -> bool:
    if sys.platform != "linux":
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    now = process_start_time(pid)
    return now is not None and (now == start_time or now == 0 or start_time == 0)


@dataclass(frozen=True)
class Reaped:
    pid: int
    transactions: int
    locks: int
    txn_ids: tuple[int, ...] = ()


class LockDB:
    """One connection to the lock database.  Not shared between threads."""

    def __init__(self, db_path: str, *, first_txn_id: int = 1) -> None:
        self.path = db_path + "-locks"
        created = not os.path.exists(self.path)
        self.conn = apsw.Connection(self.path)
        self.conn.set_busy_timeout(60_000)  # safety net only: writers serialize on _guard
        self._guard = oslock.ByteLock(self.path, oslock.LOCKDB)
        with self._guard:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=OFF")
            if created:
                with contextlib.suppress(OSError):
                    os.chmod(self.path, os.stat(db_path).st_mode & 0o7777)
            with self._write():
                self.conn.execute(_SCHEMA)
                self.conn.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,)
                )
                # Transaction ids key the commit markers in the main database, so a lock
                # database that was deleted must not hand out ids that were already used.
                self.conn.execute(
                    "INSERT INTO sqlite_sequence(name, seq) SELECT 'transactions', ? "
                    "WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name='transactions')",
                    (first_txn_id - 1,),
                )
                self.conn.execute(
                    "UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name='transactions'",
                    (first_txn_id - 1,),
                )
        self.pid = os.getpid()
        self.start_time = process_start_time(self.pid) or 0

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """A write transaction; the caller must hold ``_guard``."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    @contextlib.contextmanager
    def writing(self) -> Iterator[apsw.Connection]:
        with self._guard, self._write():
            yield self.conn

    def _write_one(self, sql: str, params: tuple[object, ...]) -> int:
        """Run one statement in its own write transaction; returns ``last_insert_rowid``.

        The per-transaction hot path, so no context-manager machinery.
        """
        conn = self.conn
        self._guard.acquire()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(sql, params)
                rowid = conn.last_insert_rowid()
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return rowid
        finally:
            self._guard.release()

    def register_holder(self) -> list[Reaped]:
        """Record this process as a holder, reaping dead ones first.  Returns what was reaped."""
        with self.writing() as c:
            reaped = self._reap_dead(c)
            c.execute(
                "INSERT INTO holders(pid, start_time, registered_at, argv) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(pid) DO UPDATE SET start_time=excluded.start_time "
                "WHERE start_time != excluded.start_time",
                (self.pid, self.start_time, time.time(), " ".join(sys.argv)[:500]),
            )
        return reaped

    def _reap_dead(self, c: apsw.Connection) -> list[Reaped]:
        reaped = []
        holders = list(c.execute("SELECT pid, start_time FROM holders"))
        # Transactions whose process has no holder row (start time unknown): judged by pid.
        holders += list(
            c.execute(
                "SELECT DISTINCT pid, 0 FROM transactions "
                "WHERE pid NOT IN (SELECT pid FROM holders)"
            )
        )
        for pid, start_time in holders:
            if pid == self.pid and start_time == self.start_time:
                continue
            if holder_alive(pid, start_time):
                continue
            txns = [t for (t,) in c.execute("SELECT txn_id FROM transactions WHERE pid=?", (pid,))]
            nlocks = 0
            for txn_id in txns:
                nlocks += self._drop_txn(c, txn_id)
            c.execute("DELETE FROM holders WHERE pid=?", (pid,))
            reaped.append(Reaped(pid, len(txns), nlocks, tuple(txns)))
        return reaped

    @staticmethod
    def _drop_txn(c: apsw.Connection, txn_id: int) -> int:
        c.execute("DELETE FROM locks WHERE txn_id=?", (txn_id,))
        nlocks = c.changes()
        c.execute("DELETE FROM waiters WHERE txn_id=?", (txn_id,))
        c.execute("DELETE FROM transactions WHERE txn_id=?", (txn_id,))
        return nlocks

    def reap(self) -> list[Reaped]:
        with self.writing() as c:
            return self._reap_dead(c)

    def reap_and_wake(self) -> list[int]:
        """Reap dead holders; returns the waiters to wake if anything was released."""
        with self.writing() as c:
            reaped = self._reap_dead(c)
            return self._others_waiting(c, -1) if reaped else []

    def begin(self, lock_level: str) -> int:
        """Register a new transaction of this process and return its id."""
        return self._write_one(
            "INSERT INTO transactions(pid, lock_level, state, began_at) VALUES (?, ?, ?, ?)",
            (self.pid, lock_level, ACTIVE, time.time()),
        )

    def end(self, txn_id: int, changed_tables: frozenset[str] = frozenset()) -> list[int]:
        """Forget a finished transaction, release everything it held, and bump the version of
        each table it changed (table-level transactions use them to detect stale snapshots).

        Returns the waiting transactions to wake.
        """
        conn = self.conn
        self._guard.acquire()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("DELETE FROM locks WHERE txn_id=?", (txn_id,))
                released = conn.changes()
                conn.execute("DELETE FROM waiters WHERE txn_id=?", (txn_id,))
                released += conn.changes()
                conn.execute("DELETE FROM transactions WHERE txn_id=?", (txn_id,))
                for name in changed_tables:
                    conn.execute(_BUMP_VERSION, (name,))
                wake = self._others_waiting(conn, txn_id) if released else []
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            self._guard.release()
        return wake

    @staticmethod
    def _others_waiting(c: apsw.Connection, txn_id: int) -> list[int]:
        # Every waiter re-checks its own request, so waking all of them is correct; there are
        # few, and resources are related (a table lock blocks its rows), so finer is not cheaper.
        return [
            t
            for (t,) in c.execute(
                "SELECT DISTINCT txn_id FROM waiters WHERE txn_id != ?", (txn_id,)
            )
        ]

    def reserve_ids(self, count: int) -> range:
        """Transaction ids for statements that commit inside the merge lock (the autocommit
        fast path): they need a commit marker but never appear as live transactions."""
        with self.writing() as c:
            (last,) = c.execute(
                "UPDATE sqlite_sequence SET seq = seq + ? WHERE name = 'transactions' "
                "RETURNING seq",
                (count,),
            ).fetchone()
        return range(last - count + 1, last + 1)

    def locked_by_others(self, tables: set[str], rows: dict[str, list[int]]) -> bool:
        """Whether a live transaction holds a lock on one of ``tables`` or on one of the
        (updated or deleted) ``rows``.  One query unless a table has many rows."""
        resources = ["table:" + t for t in tables]
        for table, rowids in rows.items():
            if len(rowids) > 500:
                prefix = f"row:{table}:"
                if self.conn.execute(
                    "SELECT 1 FROM locks WHERE resource >= ? AND resource < ? LIMIT 1",
                    (prefix, prefix[:-1] + ";"),
                ).fetchone():
                    return True
            else:
                resources.extend(f"row:{table}:{r}" for r in rowids)
        if not resources:
            return False
        return (
            self.conn.execute(
                f"SELECT 1 FROM locks WHERE resource IN ({','.join('?' * len(resources))}) LIMIT 1",
                resources,
            ).fetchone()
            is not None
        )

    def has_table_level(self) -> bool:
        """Whether any table-level transaction is live."""
        return (
            self.conn.execute(
                "SELECT 1 FROM transactions WHERE lock_level = 'table' LIMIT 1"
            ).fetchone()
            is not None
        )

    def bump_versions_if_table_level(self, tables: set[str]) -> None:
        """Table-level transactions compare table versions to spot stale snapshots."""
        if not tables or not self.has_table_level():
            return
        with self.writing() as c:
            for name in tables:
                c.execute(_BUMP_VERSION, (name,))

    def record_pages(self, txn_id: int, pages: frozenset[int]) -> None:
        """Show a committing page-level transaction's read set (as S locks on ``page:<n>``)."""
        now = time.time()
        with self.writing() as c:
            c.execute("UPDATE transactions SET state=? WHERE txn_id=?", (COMMITTING, txn_id))
            c.executemany(
                "INSERT OR IGNORE INTO locks(resource, txn_id, mode, granted_at) "
                "VALUES (?, ?, 'S', ?)",
                [(f"page:{p}", txn_id, now) for p in sorted(pages)],
            )

    def table_versions(self) -> dict[str, int]:
        return dict(self.conn.execute("SELECT name, version FROM table_versions"))

    # -- locks -----------------------------------------------------------------------------

    @staticmethod
    def _related(resource: str) -> tuple[str, str, str]:
        """(covering table lock, row range start, row range end) that a request must respect."""
        if resource.startswith("row:"):
            return ("table:" + _table_of_row(resource), "", "")
        if resource.startswith("table:"):
            prefix = "row:" + resource[6:] + ":"
            return ("", prefix, prefix[:-1] + ";")
        return ("", "", "")

    def fast_grant(self, txn_id: int, requests: list[tuple[str, str]]) -> int:
        """Grant requests in order while nothing conflicts; returns how many were granted."""
        c = self.conn
        now = time.time()
        granted = 0
        self._guard.acquire()
        try:
            if len(requests) == 1:  # autocommit: one statement, no BEGIN/COMMIT round trips
                resource, mode = requests[0]
                self._grant_one(resource, txn_id, mode, now)
                return c.changes()
            c.execute("BEGIN IMMEDIATE")
            try:
                for resource, mode in requests:
                    c.execute(_FAST_GRANT, (resource, txn_id, mode, now, *self._related(resource)))
                    if not c.changes():
                        break
                    granted += 1
            except BaseException:
                c.execute("ROLLBACK")
                raise
            c.execute("COMMIT")
            return granted
        finally:
            self._guard.release()

    def _grant_one(self, resource: str, txn_id: int, mode: str, now: float) -> None:
        if resource.startswith("row:"):  # rows are always X
            table = "table:" + _table_of_row(resource)
            self.conn.execute(_FAST_GRANT_ROW, (resource, txn_id, mode, now, table))
        else:
            self.conn.execute(_FAST_GRANT, (resource, txn_id, mode, now, *self._related(resource)))

    def _blockers(
        self, c: apsw.Connection, txn_id: int, resource: str, mode: str, seq: int | None
    ) -> list[Blocker]:
        """Who keeps ``txn_id`` from holding ``resource`` in ``mode`` right now.

        One query, since this runs on every lock request: holders of the resource, holders of
        a covering table lock (for a row) or of any of the table's rows (for a table), and
        earlier waiters for the resource (first come, first served).
        """
        related = self._related(resource)
        found: dict[int, tuple[str, int]] = {}
        for other, where, held, pid in c.execute(
            _BLOCKERS,
            (resource, txn_id, *related, seq if seq is not None else 1 << 62),
        ):
            if where != resource or _conflicts(mode, held):
                found.setdefault(other, (where, pid))
        return [Blocker(t, pid, where, mode) for t, (where, pid) in found.items()]

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
        c = self.conn
        wake: list[int] = []
        self._guard.acquire()
        try:
            c.execute("BEGIN IMMEDIATE")
            try:
                # Only a queued waiter can have been picked as a deadlock victim.
                state = (
                    queue
                    and c.execute(
                        "SELECT state FROM transactions WHERE txn_id=?", (txn_id,)
                    ).fetchone()
                )
                if state and state[0] == DEADLOCK_VICTIM:
                    resource = c.execute(
                        "SELECT resource FROM waiters WHERE txn_id=?", (txn_id,)
                    ).fetchone()
                    c.execute("DELETE FROM waiters WHERE txn_id=?", (txn_id,))
                    c.execute("UPDATE transactions SET state=? WHERE txn_id=?", (ACTIVE, txn_id))
                    raise Victim(
                        [txn_id], resource[0] if resource else "", self._others_waiting(c, txn_id)
                    )
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
                        raise Victim(
                            [txn_id, own[0].txn_id], resource, self._others_waiting(c, txn_id)
                        )
                    if blockers:
                        if queue:
                            if seq is None:
                                c.execute(
                                    "INSERT INTO waiters(txn_id, resource, mode, since) "
                                    "VALUES (?, ?, ?, ?)",
                                    (txn_id, resource, mode, time.time()),
                                )
                            wake = self._break_deadlock(c, txn_id, resource)
                        break
                    c.execute(
                        "INSERT INTO locks(resource, txn_id, mode, granted_at) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT(resource, txn_id) DO UPDATE SET mode=excluded.mode",
                        (resource, txn_id, mode, time.time()),
                    )
                    if seq is not None:
                        c.execute("DELETE FROM waiters WHERE seq=?", (seq,))
                        # Waiters queued behind this one may now be grantable.
                        wake = self._others_waiting(c, txn_id)
            except Victim:
                c.execute("COMMIT")
                raise
            except BaseException:
                c.execute("ROLLBACK")
                raise
            c.execute("COMMIT")
        finally:
            self._guard.release()
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
        """If waiting would close a cycle, pick the youngest transaction in it as the victim."""
        graph = self._wait_for_graph(c)
        cycle = _find_cycle(graph, txn_id)
        if not cycle:
            return []
        victim = max(cycle)  # ids only grow: the largest began last
        if victim == txn_id:
            c.execute("DELETE FROM waiters WHERE txn_id=?", (txn_id,))
            raise Victim(cycle, resource, self._others_waiting(c, txn_id))
        c.execute("UPDATE transactions SET state=? WHERE txn_id=?", (DEADLOCK_VICTIM, victim))
        return [victim]

    def release(self, txn_id: int, resources: list[str]) -> list[int]:
        """Release some locks before the transaction ends; returns the waiters to wake."""
        c = self.conn
        self._guard.acquire()
        try:
            # Under the guard, a waiter either queued before this delete (and is found below)
            # or checks after it (and finds the resource free): no wake-up is lost.
            if len(resources) == 1:
                c.execute("DELETE FROM locks WHERE resource=? AND txn_id=?", (resources[0], txn_id))
            else:
                with self._write():
                    c.executemany(
                        "DELETE FROM locks WHERE resource=? AND txn_id=?",
                        [(r, txn_id) for r in resources],
                    )
            return self._others_waiting(c, txn_id)
        finally:
            self._guard.release()

    def stop_waiting(self, txn_id: int) -> list[int]:
        with self.writing() as c:
            c.execute("DELETE FROM waiters WHERE txn_id=?", (txn_id,))
            return self._others_waiting(c, txn_id) if c.changes() else []

    def holds(self, txn_id: int) -> dict[str, str]:
        return dict(self.conn.execute("SELECT resource, mode FROM locks WHERE txn_id=?", (txn_id,)))

    def unregister_holder(self) -> None:
        """Drop this process's holder row if it has no transactions left."""
        with self.writing() as c:
            c.execute(
                "DELETE FROM holders WHERE pid=? AND start_time=? AND NOT EXISTS "
                "(SELECT 1 FROM transactions WHERE pid=?)",
                (self.pid, self.start_time, self.pid),
            )

    def close(self) -> None:
        self.conn.close()
