"""What each lock level locks, and when (architecture.md, "Locks and waiting").

- ``table``: before each statement runs, every table it reads (S) or writes (X) as the authorizer
  reports them (foreign-key parents, trigger targets, views and subqueries included), held to the
  end of the transaction.  APSW's statement cache skips the authorizer for cached statements, so
  each statement's table set is cached here by SQL text and schema version.
- ``row``: after each statement, the rows it wrote (update hook) are X-locked; past
  ``escalate_at`` rows of one table the whole table is X-locked instead.  Row locks are written
  to the lock database ``row_lock_delay`` seconds after the statement (by :mod:`.publisher`),
  unless the transaction has finished by then; a transaction registers there with its first
  written lock.
- ``page``: no locks; the read set is validated at merge.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypedDict

import apsw

from ..conflicts import conflict
from ..errors import ConflictError
from ..identifiers import quote
from . import waits
from .grants import Blocker
from .levels import Level
from .lockdb import LockDB

LAST_INSERT_ROWID = "()last_insert_rowid"  # how the authorizer's report names the function
DEFAULT_ESCALATE_AT = 1000
# Long enough that a transaction whose statements and commit follow each other never writes
# its row locks; short against any wait a user would notice.
DEFAULT_ROW_LOCK_DELAY = 0.002


class Restart(Exception):  # noqa: N818 - a signal, not an error
    """The transaction has read nothing yet and its snapshot is stale: pin a new one."""


class Reprepare(Exception):  # noqa: N818 - a signal, not an error
    """The statement came from APSW's cache, so the authorizer did not report its tables."""


class TableSets:
    """Per connection: the tables each statement touches, learned from the authorizer."""

    def __init__(self) -> None:
        self.collecting: dict[str, str] = {}
        self._cache: dict[tuple[int, str], dict[str, str]] = {}

    def record(self, table: str, mode: str) -> None:
        if self.collecting.get(table) != "X":
            self.collecting[table] = mode

    def take(self, schema_version: int, sql: str, *, prepared_now: bool) -> dict[str, str]:
        """The statement's tables.  ``prepared_now``: SQLite certainly just prepared it (the
        authorizer ran), so an empty report means it touches no table."""
        key = (schema_version, sql)
        if self.collecting or prepared_now:
            found, self.collecting = self.collecting, {}
            self._cache[key] = found
            return found
        cached = self._cache.get(key)
        if cached is None:
            raise Reprepare
        return cached


class Settings(TypedDict):
    """What a connection's transactions lock by (``connect()``'s options), and the connections
    a wait's outcome is read from: :class:`Locking`'s keyword arguments."""

    level: Level
    timeout: float
    escalate_at: int
    row_lock_delay: float
    publisher: Any  # a publisher.Publisher, or None: importing it here would make a cycle
    reader: apsw.Connection
    snapshot_reader: apsw.Connection


class Locking:
    """The locks of one transaction."""

    def __init__(
        self,
        level: Level,
        lockdb: LockDB,
        txn_id: int,
        timeout: float,
        escalate_at: int,
        reader: apsw.Connection,
        snapshot_reader: apsw.Connection,
        immediate: bool = False,
        registered: bool = True,
        began_at: float = 0.0,
        row_lock_delay: float = 0.0,
        publisher: Any = None,
    ) -> None:
        self.level = level
        # BEGIN IMMEDIATE/EXCLUSIVE: lock tables for writing from the first read on, as SQLite
        # takes its write lock at BEGIN IMMEDIATE.  Avoids the S-to-X upgrade deadlock of a
        # read-modify-write under contention.
        self.immediate = immediate
        self.lockdb = lockdb
        self.txn_id = txn_id
        self.timeout = timeout
        self.escalate_at = escalate_at
        self._reader = reader
        self._snapshot_reader = snapshot_reader
        self.versions: dict[str, int] = {}
        self.held_tables: dict[str, str] = {}
        self.row_writes: list[tuple[str, int]] = []
        self.held_rows: dict[str, set[int]] = {}  # by table
        self.escalated: set[str] = set()
        self.escalating: set[str] = set()  # past escalate_at in the running statement
        self._written: dict[str, int] = {}
        # Deferred row locks (see :mod:`.publisher`).  ``_mutex`` orders this transaction's
        # thread and the publisher's; nobody holds it while waiting for a lock.
        self.registered = registered
        self.began_at = began_at
        self._delay = row_lock_delay
        self._publisher = publisher if row_lock_delay > 0 else None
        self._mutex = threading.Lock()
        self._pending: list[tuple[str, str]] = []
        self._scheduled = False
        self._contended = False  # the publisher could not grant them: we wait ourselves
        self._closed = False

    # -- table level ---------------------------------------------------------------------

    def read_versions(self) -> None:
        """Called just before the snapshot is pinned: a table whose version later differs was
        changed by a commit this snapshot may not include."""
        self.versions = self.lockdb.table_versions()

    def before_statement(self, tables: dict[str, str], fresh: bool) -> None:
        tables = {t: m for t, m in tables.items() if m != "F"}
        if self.immediate:
            tables = dict.fromkeys(tables, "X")
        wanted = [
            ("table:" + t, m)
            for t, m in sorted(tables.items())
            if not (self.held_tables.get(t) == "X" or self.held_tables.get(t) == m)
        ]
        if not wanted:
            return
        waits.acquire(self.lockdb, self.txn_id, wanted, self.timeout)
        for resource, mode in wanted:
            self.held_tables[resource[6:]] = mode
        now = self.lockdb.table_versions()
        stale = [r[6:] for r, _ in wanted if now.get(r[6:], 0) != self.versions.get(r[6:], 0)]
        if stale:
            if fresh:
                raise Restart
            raise ConflictError(
                f"conflict: table {stale[0]!r} was changed by a transaction that committed after "
                "this one's snapshot; the transaction was rolled back (retry it)",
                table=stale[0],
                kind="stale",
            )

    # -- row level ----------------------------------------------------------------------

    def row_written(self, table: str, rowid: int) -> None:
        if table in self.escalated or table in self.escalating:
            return
        # Decided as rows come, so a statement writing millions of rows does not first
        # collect millions of entries (duplicates count too: it only escalates earlier).
        n = self._written.get(table, 0) + 1
        self._written[table] = n
        if len(self.held_rows.get(table, ())) + n > self.escalate_at:
            self.escalating.add(table)
            return
        self.row_writes.append((table, rowid))

    def forget_statement(self) -> None:
        self.row_writes.clear()
        self._written.clear()
        self.escalating.clear()

    def after_statement(self) -> None:
        writes, escalating = self.row_writes, self.escalating
        if self._written:
            self._written.clear()
        if not writes and not escalating:
            return
        self.row_writes = []
        if len(writes) == 1 and not escalating:
            # The usual write: one row, by key.  Same outcome as the general path below.
            ((table, rowid),) = writes
            held = self.held_rows.get(table)
            if held is None:
                held = self.held_rows[table] = set()
            if table in self.escalated or rowid in held:
                return
            if len(held) < self.escalate_at:
                held.add(rowid)
                self._request([(f"row:{table}:{rowid}", "X")], escalates=False)
                return
        # Escalation (table locks) is rare: the usual statement asks only for row locks.
        requests: list[tuple[str, str]] = []
        if escalating:
            self.escalating = set()
            requests = [("table:" + t, "X") for t in sorted(escalating)]
            self.escalated |= escalating
        escalates = bool(requests)
        per_table: dict[str, list[int]] = {}
        for table, rowid in writes:
            if table not in escalating:
                rowids = per_table.get(table)
                if rowids is None:
                    per_table[table] = [rowid]
                else:
                    rowids.append(rowid)
        new_rows: dict[str, list[int]] = {}
        for table, rowids in per_table.items():
            if table in self.escalated:
                continue
            held = self.held_rows.get(table, ())
            new = [r for r in dict.fromkeys(rowids) if r not in held]
            if len(held) + len(new) > self.escalate_at:
                self.escalated.add(table)
                requests.append(("table:" + table, "X"))
                escalates = True
                continue
            new_rows[table] = new
            prefix = f"row:{table}:"
            for rowid in new:
                requests.append((prefix + str(rowid), "X"))
        if not requests:
            return
        # Ours from now on, whether written yet or not (escalation counts them).
        for table, new in new_rows.items():
            self.held_rows.setdefault(table, set()).update(new)
        self._request(requests, escalates)

    def _request(self, requests: list[tuple[str, str]], escalates: bool) -> None:
        # A lock someone else has written makes this statement wait, as at once; what nobody
        # has claimed yet is written later.
        if (
            self._publisher is None
            or self._contended
            or escalates
            or self.lockdb.grants.claimed_by_others(self.txn_id, requests)
        ):
            self.acquire_pending(requests)
            return
        with self._mutex:
            self._pending.extend(requests)
            schedule, self._scheduled = not self._scheduled, True
        if schedule:
            self._publisher.schedule(self, self._delay)

    def _registration(self) -> tuple[str, float] | None:
        """What registering this transaction needs, the first time; ``None`` after.  Marked
        registered before the write is tried, so that ``close`` never skips an end write."""
        if self.registered:
            return None
        self.registered = True
        return (self.level.name, self.began_at)

    def acquire_pending(self, requests: list[tuple[str, str]] | None = None) -> None:
        """Write every deferred lock (and ``requests``) now, waiting for them as long as
        ``timeout``: before this transaction waits for anything, the others must be able to
        see what it holds."""
        with self._mutex:
            wanted = self._pending + (requests or [])
            self._pending = []
            self._contended = False
            register = self._registration()
        if not wanted:
            if register is not None:
                self.lockdb.grants.register(self.txn_id, *register)
            return
        waited = waits.acquire(self.lockdb, self.txn_id, wanted, self.timeout, register=register)
        if waited:
            self._check_rows_after_wait(waited)

    def publish(self, lockdb: Callable[[], LockDB]) -> None:
        """From the publisher's thread, on its own lock-database connection: grant what was
        deferred, unless the transaction finished first.  Never waits: what cannot be granted
        is left for this transaction's own thread."""
        with self._mutex:
            self._scheduled = False
            if self._closed or self._contended or not self._pending:
                return
            wanted, self._pending = self._pending, []
            register = self._registration()
            try:
                granted = lockdb().grants.fast_grant(self.txn_id, wanted, register=register)
            except BaseException:
                self._pending = wanted + self._pending
                self._contended = True
                raise
            if granted < len(wanted):
                self._pending = wanted[granted:] + self._pending
                self._contended = True

    def close(self) -> bool:
        """The transaction is committing or rolling back: nothing more is published.

        :returns: whether it is registered in the lock database (so its end must be written).
        """
        with self._mutex:
            self._closed = True
            self._pending = []
            return self.registered

    def _check_rows_after_wait(self, waited: list[Blocker]) -> None:
        """A holder we waited for has finished.  If it committed a change to a row we wrote,
        our snapshot of that row is stale and this transaction can never commit: say so now."""
        for b in waited:
            if not b.resource.startswith("row:"):
                continue
            table, _, rowid = b.resource[4:].rpartition(":")
            sql = f"SELECT * FROM main.{quote(table)} WHERE _rowid_ = ?"
            now = self._reader.execute(sql, (int(rowid),)).fetchall()
            then = self._snapshot_reader.execute(sql, (int(rowid),)).fetchall()
            if now != then:
                raise conflict(table, (int(rowid),), "data" if now else "notfound")


def authorizer_hook(table_sets: TableSets) -> Callable[[int, Any, Any, Any], None]:
    """Feeds the authorizer's table reports into ``table_sets``."""

    def report(action: int, table: Any, db: Any, _unused: Any) -> None:
        if action == apsw.SQLITE_FUNCTION:
            if table and table.lower() == "last_insert_rowid":
                table_sets.record(LAST_INSERT_ROWID, "F")
            return
        if db not in (None, "main") or not table or table.startswith("sqlite_"):
            return
        if action == apsw.SQLITE_READ:
            table_sets.record(table, "S")
        elif action in (apsw.SQLITE_INSERT, apsw.SQLITE_UPDATE, apsw.SQLITE_DELETE):
            table_sets.record(table, "X")

    return report
