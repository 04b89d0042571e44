"""Merging a transaction's changeset into the real database (architecture.md, "Changesets"
and "A commit, straight down").

One merge at a time, under a kernel-blocking merge lock.  The apply, the row checks and the commit
marker share one SQLite transaction on a stock connection: after any crash a transaction committed
if and only if its marker row exists.
"""

from __future__ import annotations

import functools
import hashlib
import struct
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apsw

from .. import crashpoints
from ..conflicts import conflict
from ..errors import ConflictError, OperationalError
from ..identifiers import quote
from ..locking import oslock
from ..locking.grants import COMMITTED, CONFLICTED
from ..storage import journal, snapshot
from . import drain, replay

MARKER_TABLE = "_sqlite_concurrent_commits"

_MARKER_DDL = (
    f"CREATE TABLE IF NOT EXISTS {MARKER_TABLE}"
    "(txn_id INTEGER PRIMARY KEY, committed_at REAL NOT NULL)"
)

_KINDS = {
    apsw.SQLITE_CHANGESET_DATA: "data",
    apsw.SQLITE_CHANGESET_NOTFOUND: "notfound",
    apsw.SQLITE_CHANGESET_CONFLICT: "conflict",
    apsw.SQLITE_CHANGESET_CONSTRAINT: "constraint",
    apsw.SQLITE_CHANGESET_FOREIGN_KEY: "foreign_key",
}

# Every change in a changeset is applied with these: the changeset already holds each effect of
# the transaction's triggers and cascades, so neither may run again.
_APPLY_FLAGS = apsw.SQLITE_CHANGESETAPPLY_FKNOACTION


# How long the next waiter for the merge lock spins before it sleeps: with 8 writers of
# one-row transactions at think 0, 300 us gave 1.4x the commits of sleeping at once, and
# 1 ms or 3 ms no more (benchmarks/contention.py, docs/benchmarks.md).
MERGE_SPIN = 0.0003


def merge_lock(locks_path: str) -> oslock.ByteLock:
    return oslock.ByteLock(locks_path, oslock.MERGE, spin=MERGE_SPIN)


@dataclass(frozen=True)
class RowImages:
    """Rows of one table as the transaction's snapshot saw them, checked again at merge time.

    A changeset UPDATE carries old values only for the columns it changed, so the apply alone
    would merge two transactions that changed different columns of one row.  Snapshot isolation
    says the second writer of a row loses, so the whole row is compared.  Compactly: the keys
    journal-encoded one after another, and a 16-byte digest of each row (a 200k-row UPDATE
    keeps 5 MB, not 200k Python tuples).
    """

    table: str
    select: str
    keys: bytes
    digests: bytes

    def __iter__(self) -> Iterator[tuple[tuple[Any, ...], bytes]]:
        for i, key in enumerate(journal.iter_values(self.keys)):
            yield tuple(key), self.digests[16 * i : 16 * i + 16]


def row_digest(row: tuple[Any, ...] | None) -> bytes:
    if row is None:
        return bytes(16)
    # repr is exact for every SQLite value type (floats round-trip), and the same in every
    # process (unlike hash(), which is salted per process).
    return hashlib.blake2b(repr(row).encode("utf-8", "surrogatepass"), digest_size=16).digest()


def read_changeset(
    snapshot_conn: apsw.Connection, changeset: bytes, shapes: dict[Any, replay.TableShape]
) -> tuple[list[RowImages] | None, SnapshotRows | None, frozenset[str], frozenset[str]]:
    """One pass over a changeset: the whole rows, as of the snapshot, of every row it updates,
    the tables it changes, and those it inserts into.

    A small changeset keeps the rows themselves (the merge then checks them in the UPDATE it
    applies, see ``replay.run``); a big one only their digests (``RowImages``).
    """
    whole = len(changeset) <= replay.SMALL
    rows: replay.Rows = {}
    selects: dict[str, str] = {}
    found: dict[str, tuple[str, bytearray, bytearray]] = {}
    tables = set()
    inserts = set()
    changes: list[replay.Change] = []
    for change in apsw.Changeset.iter(changeset):
        tables.add(change.name)
        if whole:
            changes.append(replay.Change.of(change))
        if change.opcode != apsw.SQLITE_UPDATE:
            if change.opcode == apsw.SQLITE_INSERT:
                inserts.add(change.name)
            continue
        key_cols = sorted(change.pk_columns)
        shape_key = (change.name, change.column_count, tuple(key_cols))
        shape = shapes.get(shape_key)
        if shape is None:
            shape = shapes[shape_key] = replay.TableShape(
                snapshot_conn, change.name, change.column_count, key_cols
            )
        if not shape.usable:
            continue
        old = change.old
        assert old is not None
        key = tuple([old[i] for i in key_cols])
        # An update of every column that is not the key carries the whole old row: the
        # snapshot's, since a session records each row as it was before the transaction.
        # (``in`` compares by identity first; SQLite values never equal the marker.)
        if apsw.no_change in old:
            row = snapshot_conn.execute(shape.sql, key).fetchone()
        else:
            row = tuple(old)
        if whole:
            rows.setdefault(change.name, {})[key] = row
            selects[change.name] = shape.sql
            continue
        entry = found.get(change.name)
        if entry is None or entry[0] != shape.sql:
            entry = found[change.name] = (shape.sql, bytearray(), bytearray())
        journal.put_value(entry[1], key)
        entry[2].extend(row_digest(row))
    if whole:
        return None, SnapshotRows(rows, selects, changes), frozenset(tables), frozenset(inserts)
    images = [
        RowImages(table, sql, bytes(keys), bytes(digests))
        for table, (sql, keys, digests) in found.items()
    ]
    return images, None, frozenset(tables), frozenset(inserts)


@dataclass(frozen=True)
class SnapshotRows:
    """The snapshot rows of a small changeset's updates, and the SELECT that fetched each
    table's (to digest them into ``RowImages`` if the transaction is journaled)."""

    rows: replay.Rows
    selects: dict[str, str]
    # The changeset's changes, copied out once here rather than again under the merge lock.
    changes: list[replay.Change]

    def images(self) -> list[RowImages]:
        images = []
        for table, by_key in self.rows.items():
            keys, digests = bytearray(), bytearray()
            for key, row in by_key.items():
                journal.put_value(keys, key)
                digests.extend(row_digest(row))
            images.append(RowImages(table, self.selects[table], bytes(keys), bytes(digests)))
        return images


def sequences(
    txn_conn: apsw.Connection, snapshot_conn: apsw.Connection, changed: frozenset[str]
) -> list[tuple[str, int]]:
    """AUTOINCREMENT counters as the transaction left them: those it advanced or created (an
    INSERT that inserts nothing still creates its table's, with ``seq`` 0), and those of the
    tables ``changed`` (which its changeset inserts into).

    ``sqlite_sequence`` is not in a changeset.  A row inserted and deleted in the same
    transaction leaves no change, and SQLite still promises that id is never handed out again.
    And applying a change does not always advance a counter as the transaction did: an UPDATE
    of a rowid is applied as a DELETE and an INSERT, which advances it; SQLite's UPDATE does not.
    """
    now = counters(txn_conn)
    if not now:
        return []
    before = counters(snapshot_conn)
    return [
        (name, seq)
        for name, seq in now.items()
        if name not in before or seq > before[name] or name in changed
    ]


def counters(conn: apsw.Connection) -> dict[str, int]:
    """``sqlite_sequence`` as ``conn`` sees it (AUTOINCREMENT counters), empty without one."""
    exists = "SELECT 1 FROM main.sqlite_schema WHERE name = 'sqlite_sequence'"
    if not conn.execute(exists).fetchone():
        return {}
    return dict(conn.execute("SELECT name, seq FROM main.sqlite_sequence"))


_digests: weakref.WeakKeyDictionary[apsw.Connection, tuple[int, bytes]] = (
    weakref.WeakKeyDictionary()
)


def schema_digest(conn: apsw.Connection, cookie: int) -> bytes:
    """The main database's schema apart from the marker table, as ``conn`` sees it at schema
    ``cookie`` (read once per connection and cookie).

    The marker table is created only when a merge first commits another process's transaction
    (``_apply_group``); that changes the schema cookie, which must not fail every transaction
    whose snapshot came before it, so the merge compares this instead when the cookie differs.
    """
    known = _digests.get(conn)
    if known is not None and known[0] == cookie:
        return known[1]
    rows = conn.execute(
        "SELECT type, name, tbl_name, sql FROM main.sqlite_schema WHERE name <> ? "
        "ORDER BY type, name",
        (MARKER_TABLE,),
    ).fetchall()
    digest = row_digest(tuple(rows))
    _digests[conn] = (cookie, digest)
    return digest


def has_marker_table(conn: apsw.Connection) -> bool:
    return (
        conn.execute(
            "SELECT 1 FROM sqlite_schema WHERE type='table' AND name=?", (MARKER_TABLE,)
        ).fetchone()
        is not None
    )


def last_marker(conn: apsw.Connection) -> int:
    if not has_marker_table(conn):
        return 0
    row = conn.execute(f"SELECT max(txn_id) FROM {MARKER_TABLE}").fetchone()
    return (row[0] or 0) if row else 0


def is_committed(conn: apsw.Connection, txn_id: int) -> bool:
    """Whether another process committed ``txn_id`` for its owner (its marker exists)."""
    return (
        has_marker_table(conn)
        and conn.execute(f"SELECT 1 FROM {MARKER_TABLE} WHERE txn_id=?", (txn_id,)).fetchone()
        is not None
    )


@dataclass(frozen=True)
class PageCheck:
    """Page-level validation: the pages a transaction read, and the snapshot it read them in."""

    path: str
    pages: frozenset[int]
    header: Any  # the snapshot's WAL-index header


@dataclass
class Pending:
    """A transaction ready to merge."""

    txn_id: int
    changeset: bytes
    schema_version: int
    images: list[RowImages] | None  # digests of the snapshot rows, when not ``rows``
    foreign_keys: bool
    sequences: list[tuple[str, int]]
    pages: PageCheck | None = None
    rebase: dict[str, frozenset[int]] | None = None  # auto rowids to assign afresh
    rows: SnapshotRows | None = None  # the snapshot rows themselves; never journaled
    schema_digest: bytes = b""  # see ``schema_digest``
    steps: list[replay.Step] | None = None  # statements for schema ``schema_version``; ditto
    # Tables whose changes are keyed by rowid though they declare a key (``rowid_keys``):
    # applied as statements only.
    by_rowid: frozenset[str] = frozenset()

    def row_images(self) -> list[RowImages]:
        if self.images is None:
            self.images = self.rows.images() if self.rows is not None else []
        return self.images


def encode_pending(p: Pending) -> bytes:
    """A pending transaction as a journal record payload (journal.encode, never pickle)."""
    pages = None
    if p.pages is not None:
        h = p.pages.header
        header = None
        if h is not None:
            header = [h.raw, h.change, h.page_size, h.max_frame, h.n_page, list(h.salt)]
            header.append(h.backfilled)
        pages = [p.pages.path, sorted(p.pages.pages), header]
    return journal.encode(
        [
            p.txn_id,
            p.changeset,
            p.schema_version,
            [[i.table, i.select, i.keys, i.digests] for i in p.row_images()],
            int(p.foreign_keys),
            [list(s) for s in p.sequences],
            pages,
            None if p.rebase is None else [[t, sorted(r)] for t, r in p.rebase.items()],
            sorted(p.by_rowid),
            p.schema_digest,
        ]
    )


def decode_pending(data: bytes) -> Pending:
    (txn_id, changeset, schema_version, images, fk, sequences, pages, rebase, by_rowid, digest) = (
        journal.decode(data)
    )
    check = None
    if pages is not None:
        path, read, header = pages
        wal = None
        if header is not None:
            raw, change, size, mx, n_page, salt, backfilled = header
            wal = snapshot.WalHeader(raw, change, size, mx, n_page, tuple(salt), backfilled)
        check = PageCheck(path, frozenset(read), wal)
    return Pending(
        txn_id=txn_id,
        changeset=changeset,
        schema_version=schema_version,
        images=[RowImages(t, s, k, d) for t, s, k, d in images],
        foreign_keys=bool(fk),
        sequences=[(n, q) for n, q in sequences],
        pages=check,
        rebase=None if rebase is None else {t: frozenset(r) for t, r in rebase},
        by_rowid=frozenset(by_rowid),
        schema_digest=digest,
    )


def apply_one(conn: apsw.Connection, pending: Pending) -> None:
    """Validate and apply one transaction inside the caller's write transaction.

    :raises ConflictError: nothing of this transaction was applied.
    """
    (schema_version,) = conn.execute("PRAGMA main.schema_version").fetchone()
    if schema_version != pending.schema_version and (
        not pending.schema_digest or schema_digest(conn, schema_version) != pending.schema_digest
    ):
        raise conflict(None, None, "schema")
    if pending.pages is not None:
        validate_pages(conn, pending.pages)
    planned, by_rowid = _plan(conn, pending, schema_version)
    # Snapshot isolation: every updated row must be as the snapshot saw it.  With the rows at
    # hand and statements to apply them, each UPDATE checks its own row; else check first.
    if planned is None or pending.rows is None:
        _check_row_images(conn, pending)
    # What the counters were before this apply: it may advance them where the transaction
    # did not (see ``sequences``).
    before = counters(conn) if pending.sequences else {}
    changes = _Changes(_rows_to_rebase(conn, pending))
    crashpoints.reach("merge.before_apply")
    if pending.changeset:
        _apply_changes(conn, pending, planned, by_rowid, changes)
    if changes.held:
        _insert_afresh(conn, changes.held)
    for name, seq in pending.sequences:
        seq = max(seq, before.get(name, 0))
        conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = ?", (seq, name))
        if not conn.changes():
            conn.execute("INSERT INTO sqlite_sequence(name, seq) VALUES (?, ?)", (name, seq))


def _plan(
    conn: apsw.Connection, pending: Pending, schema_version: int
) -> tuple[list[replay.Step] | None, list[replay.Step]]:
    """The transaction's changes as statements, when they can all run so (``planned``); else
    ``None`` and those ``Changeset.apply`` cannot take (``by_rowid``)."""
    planned = pending.steps  # built before the merge lock, for this schema (see ``commit``)
    if planned is not None or not pending.changeset:
        return planned, []
    rows = pending.rows.rows if pending.rows else None
    plan = functools.partial(
        replay.plan,
        conn,
        pending.changeset,
        cookie=schema_version,
        foreign_keys=pending.foreign_keys,
        changes=pending.rows.changes if pending.rows is not None else None,
    )
    whole = plan()
    if whole is not None:
        return replay.steps(whole, rows), []
    if pending.by_rowid:
        only = plan(only=pending.by_rowid)
        assert only is not None
        return None, replay.steps(only, rows)
    return None, []


def _check_row_images(conn: apsw.Connection, pending: Pending) -> None:
    for images in pending.row_images():
        for key, digest in images:
            now = conn.execute(images.select, key).fetchone()
            if row_digest(now) != digest:
                raise conflict(images.table, key, "data" if now is not None else "notfound")


def _rows_to_rebase(conn: apsw.Connection, pending: Pending) -> dict[str, Any]:
    """Auto-assigned rowids nobody observed (architecture.md, "Rowids nobody saw").  If another
    commit has since taken any rowid at or above the lowest of them, the whole batch moves past
    it, keeping its order; otherwise they keep the ids the stdlib would have given them."""
    return {
        table: rows
        for table, rows in (pending.rebase or {}).items()
        if conn.execute(
            f"SELECT 1 FROM main.{quote(table)} WHERE _rowid_ >= ? LIMIT 1", (min(rows),)
        ).fetchone()
    }


class _Changes:
    """One apply's filter and conflict handler: rows to insert afresh are held back, and each
    conflict is noted as the ``ConflictError`` it becomes."""

    def __init__(self, rebase: dict[str, Any]) -> None:
        self.rebase = rebase
        self.applied = 0
        self.held: list[tuple[str, int, tuple[Any, ...], int, tuple[int, ...]]] = []
        self.found: list[ConflictError] = []

    def keep(self, change: Any) -> bool:  # an apsw.TableChange or a replay.Change
        self.applied += 1
        if self.applied > 1:
            crashpoints.reach("merge.mid_apply")
        if change.opcode == apsw.SQLITE_INSERT and change.name in self.rebase:
            (at,) = change.pk_columns
            new = tuple(change.new)
            if new[at] in self.rebase[change.name]:
                self.held.append((change.name, new[at], new, change.column_count, (at,)))
                return False
        return True

    def on_conflict(self, reason: int, change: apsw.TableChange) -> int:
        kind = _KINDS.get(reason, "constraint")
        key = None
        if kind != "foreign_key":
            values = change.old if change.old is not None else change.new
            if values is not None:
                key = tuple(values[i] for i in sorted(change.pk_columns))
        self.found.append(conflict(change.name if kind != "foreign_key" else None, key, kind))
        return apsw.SQLITE_CHANGESET_ABORT


def _apply_changes(
    conn: apsw.Connection,
    pending: Pending,
    planned: list[replay.Step] | None,
    by_rowid: list[replay.Step],
    changes: _Changes,
) -> None:
    filtering = changes.keep if changes.rebase or crashpoints.armed("merge.mid_apply") else None
    # Off, and left off afterwards: a change of this setting expires every statement
    # prepared on the connection, so switching it back on after each merge made SQLite
    # compile the merge's statements again every time (about 3 us each, six a merge).
    # ``triggers_on`` restores it before the application's own statements run here.
    if conn.config(apsw.SQLITE_DBCONFIG_ENABLE_TRIGGER, -1):
        conn.config(apsw.SQLITE_DBCONFIG_ENABLE_TRIGGER, 0)
    try:
        if planned is not None:
            replay.run(conn, planned, keep=filtering, conflict=conflict)
        else:
            if by_rowid:
                _apply_by_rowid(conn, pending, by_rowid, filtering)
                filtering = _without(pending.by_rowid, filtering)
            apsw.Changeset.apply(
                pending.changeset,
                conn,
                filter_change=filtering,
                conflict=changes.on_conflict,
                flags=_APPLY_FLAGS,
            )
            if by_rowid and pending.foreign_keys and _deferred_violations(conn):
                raise conflict(None, None, "foreign_key")
    except (apsw.AbortError, apsw.ConstraintError):
        # A foreign-key conflict is reported after the whole apply, as SQLITE_CONSTRAINT.
        if changes.found:
            raise changes.found[0] from None
        raise
    if changes.found:  # a handler that did not abort still means the change was not applied
        raise changes.found[0]


def _apply_by_rowid(
    conn: apsw.Connection, pending: Pending, steps: list[replay.Step], keep: Any
) -> None:
    """Changes keyed by rowid, before the rest goes to ``Changeset.apply``.  Foreign keys
    are checked at the end, as the apply checks its own: a row here may reference one there."""
    if pending.foreign_keys:
        conn.execute("PRAGMA defer_foreign_keys = ON")
    replay.run(conn, steps, keep=keep, conflict=conflict)


def _without(tables: frozenset[str], keep: Any) -> Any:
    if keep is None:
        return lambda change: change.name not in tables
    return lambda change: change.name not in tables and keep(change)


def _deferred_violations(conn: apsw.Connection) -> bool:
    return conn.status(apsw.SQLITE_DBSTATUS_DEFERRED_FKS)[0] > 0


def foreign_keys(conn: apsw.Connection) -> bool:
    """Whether the connection enforces foreign keys.  Asked of the connection's flags, not
    with ``PRAGMA foreign_keys``: SQLite compiles that statement afresh every time it runs."""
    return bool(conn.config(apsw.SQLITE_DBCONFIG_ENABLE_FKEY, -1))


def triggers_on(conn: apsw.Connection) -> None:
    """Before the application's own statements on the merger: merges leave triggers off
    (see :func:`apply_one`), and a changeset already holds what its triggers did."""
    if not conn.config(apsw.SQLITE_DBCONFIG_ENABLE_TRIGGER, -1):
        conn.config(apsw.SQLITE_DBCONFIG_ENABLE_TRIGGER, 1)


def record_marker(conn: apsw.Connection, txn_id: int) -> None:
    """Inside the caller's write transaction: ``txn_id`` commits with it, exactly once.

    Only for a transaction that another process commits for its owner (group commit): the
    owner, should that merger die, learns the outcome from the marker.  A process that commits
    its own transaction learns the outcome from SQLite, and needs none.
    """
    conn.execute(
        f"INSERT INTO {MARKER_TABLE}(txn_id, committed_at) VALUES (?, ?)", (txn_id, time.time())
    )


def _insert_afresh(
    conn: apsw.Connection, held: list[tuple[str, int, tuple[Any, ...], int, tuple[int, ...]]]
) -> None:
    """Insert held rows without their rowid, in their original order, so SQLite picks one."""
    shapes: dict[tuple[str, int], replay.TableShape] = {}
    for table, _, new, count, pk in sorted(held, key=lambda h: (h[0], h[1])):
        shape = shapes.get((table, count))
        if shape is None:
            shape = shapes[(table, count)] = replay.TableShape(conn, table, count, pk)
        cols = [c for i, c in enumerate(shape.quoted) if i not in pk]
        values = [v for i, v in enumerate(new) if i not in pk]
        sql = f"INSERT INTO {shape.target}({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        try:
            conn.execute(sql, values)
        except apsw.ConstraintError as e:
            raise conflict(table, None, "constraint") from e


def stale_pages(check: PageCheck) -> frozenset[int]:
    """The pages of ``check`` changed since its snapshot (all of them if that is unknowable);
    with the snapshot still pinned (``snapshot.pages_changed_since``)."""
    changed = snapshot.pages_changed_since(check.path, check.header)
    return check.pages if changed is None else check.pages & changed


def validate_pages(conn: apsw.Connection, check: PageCheck) -> None:
    """:raises ConflictError: a page of ``check`` changed since its snapshot.  Only inside a
    write transaction on ``conn``: a writer that bypasses the merge lock could commit between
    the check and what it protects."""
    hit = stale_pages(check)
    if not hit:
        return
    pgno = min(hit)
    table = _page_table(conn, pgno)
    owner = f" (of {table!r})" if table else ""
    raise ConflictError(
        f"conflict: page {pgno}{owner} was read by this transaction and "
        "changed by another since its snapshot; the transaction was rolled back (retry it)",
        table=table,
        key=(pgno,),
        kind="page",
    )


def _page_table(conn: apsw.Connection, pgno: int) -> str | None:
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    if pages > 20000:  # dbstat walks the whole file; only worth it for an error message
        return None
    row = conn.execute("SELECT name FROM dbstat WHERE pageno = ?", (pgno,)).fetchone()
    return row[0] if row else None


GROUP_LIMIT = 64  # transactions one merge applies at most, bounding how long it holds the lock


def commit(
    conn: apsw.Connection,
    lock: oslock.ByteLock,
    lockdb: Any,
    jrnl: journal.Journal,
    pending: Pending,
    *,
    group: bool = True,
) -> None:
    """Commit ``pending``, with whatever other transactions are waiting (group commit).

    The merge record goes to this process's journal first and the transaction is marked ready,
    so whichever process holds the merge lock next can apply it along with its own, inside one
    SQLite transaction, each in its own savepoint.  Waiting for the merge lock is waiting for
    the outcome: once we hold it, a merger before us either recorded what became of us, or
    died, in which case our commit marker tells whether it committed.

    :raises ConflictError: this transaction was rejected; nothing of it was applied.
    """
    # Page-level validation reads committed WAL frames: it cannot see what an earlier member
    # of the same group changed, so those merge alone.
    group = group and pending.pages is None
    _before_lock(conn, pending)
    try:
        if not group:
            with lock:
                crashpoints.reach("merge.locked")
                error = _apply_group(conn, lockdb, [pending])[pending.txn_id]
        elif lock.try_acquire():
            # Uncontended: nobody could merge it for us, so it need not be offered to others.
            try:
                crashpoints.reach("merge.locked")
                error = _merge_with_others(conn, lockdb, pending)
            finally:
                lock.release()
        else:
            offset, length = jrnl.write_ready(pending.txn_id, encode_pending(pending))
            try:
                lockdb.queue.mark_ready(pending.txn_id, jrnl.path, offset, length)
                with lock:
                    crashpoints.reach("merge.locked")
                    error = _known_outcome(conn, lockdb, pending.txn_id)
                    if error is _UNKNOWN:
                        error = _merge_with_others(conn, lockdb, pending)
            finally:
                jrnl.done(pending.txn_id)
    finally:
        # A restart checkpoint that found the merge lock taken tries again now (architecture.md,
        # "Checkpoints").
        drain.released(lock.path)
    if error is not None:
        raise error


def _before_lock(conn: apsw.Connection, pending: Pending) -> None:
    """What the merge of ``pending`` can do before it takes the merge lock."""
    # A no-op inside a transaction, so it is set first, and outside the merge lock.  It mirrors
    # the writer's own setting: with enforcement off there, the apply must not start enforcing
    # it.  (Others join a group only with the same setting.)
    if foreign_keys(conn) != pending.foreign_keys:
        conn.pragma("foreign_keys", pending.foreign_keys)
    # The statements and their parameters depend on the transaction alone, once the merger
    # knows its schema: built here, they keep the merge lock held for less time.
    if pending.rows is not None and pending.changeset:
        plan = replay.plan(
            conn,
            pending.changeset,
            cookie=pending.schema_version,
            foreign_keys=pending.foreign_keys,
            changes=pending.rows.changes,
            known_only=True,
        )
        if plan is not None:
            pending.steps = replay.steps(plan, pending.rows.rows)


def _merge_with_others(
    conn: apsw.Connection, lockdb: Any, pending: Pending
) -> ConflictError | None:
    return _apply_group(conn, lockdb, [pending, *_others(lockdb, pending)])[pending.txn_id]


_UNKNOWN: Any = object()


def _known_outcome(conn: apsw.Connection, lockdb: Any, txn_id: int) -> Any:
    """What a previous merger decided for ``txn_id`` (``None``: committed), or ``_UNKNOWN``."""
    found = lockdb.queue.outcome(txn_id)
    if found is not None:
        state, outcome = found
        if state == COMMITTED:
            return None
        if state == CONFLICTED:
            return decode_conflict(outcome)
    # Still marked ready: nobody merged it, or its merger died before recording the outcome.
    return None if is_committed(conn, txn_id) else _UNKNOWN


def _others(lockdb: Any, own: Pending) -> list[Pending]:
    found = []
    for txn_id, path, offset, length in lockdb.queue.ready(GROUP_LIMIT):
        if txn_id == own.txn_id or path is None:
            continue
        try:
            other = decode_pending(journal.read_record(path, offset, length, txn_id))
        except (journal.JournalError, ValueError, struct.error):
            continue  # its owner applies it itself
        if other.pages is None and other.foreign_keys == own.foreign_keys:
            found.append(other)
    return found


def _apply_group(
    conn: apsw.Connection, lockdb: Any, batch: list[Pending]
) -> dict[int, ConflictError | None]:
    """Apply each transaction in its own savepoint and commit them all at once."""
    own = batch[0]
    outcomes: dict[int, ConflictError | None] = {}
    own_failure: BaseException | None = None
    conn.execute("BEGIN IMMEDIATE")
    alone = len(batch) == 1  # no savepoint needed: a conflict rolls everything back
    try:
        if not alone and not has_marker_table(conn):
            # Created the first time a merge commits another's transaction, in the same
            # SQLite transaction; not before, so that a database none of whose transactions
            # needed one shows nothing of ours.
            conn.execute(_MARKER_DDL)
        for p in batch:
            if alone:
                try:
                    apply_one(conn, p)
                except ConflictError as e:
                    conn.execute("ROLLBACK")  # nothing else to commit
                    return {p.txn_id: e}
                outcomes[p.txn_id] = None
                continue
            outcome, failure = _apply_member(conn, p, own=p is own)
            if failure is not None:
                own_failure = failure
            if outcome is not _LEFT:
                outcomes[p.txn_id] = outcome
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    crashpoints.reach("merge.after_apply")
    try:
        conn.execute("COMMIT")
    except apsw.Error as e:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise OperationalError(f"commit failed: {e}") from e
    crashpoints.reach("merge.after_commit")
    # Only the others need telling; we know our own outcome.
    others = {t: e for t, e in outcomes.items() if t != own.txn_id}
    if others:
        lockdb.queue.record_outcomes(
            {t: None if e is None else encode_conflict(e) for t, e in others.items()}
        )
    if own_failure is not None:
        raise own_failure
    return outcomes


_LEFT: Any = object()  # another's failure, left to its owner, who finds it still ready


def _apply_member(conn: apsw.Connection, p: Pending, *, own: bool) -> tuple[Any, apsw.Error | None]:
    """Apply ``p`` in a group, in its own savepoint.

    :returns: its outcome (``None``: applied; a ``ConflictError``; or ``_LEFT``), and the
        error that failed it if it is the merger's own transaction.
    """
    if not own and is_committed(conn, p.txn_id):
        # A merger that died after its commit, before recording outcomes, already applied
        # it: applying it again would conflict with itself.
        return None, None
    conn.execute("SAVEPOINT sqlite_concurrent_txn")
    try:
        apply_one(conn, p)
        if not own:
            record_marker(conn, p.txn_id)
    except ConflictError as e:
        outcome, failure = e, None
    except apsw.Error as e:
        outcome, failure = _LEFT, (e if own else None)
    else:
        conn.execute("RELEASE sqlite_concurrent_txn")
        return None, None
    conn.execute("ROLLBACK TO sqlite_concurrent_txn")
    conn.execute("RELEASE sqlite_concurrent_txn")
    return outcome, failure


def encode_conflict(e: ConflictError) -> bytes:
    return journal.encode([str(e), e.table, None if e.key is None else list(e.key), e.kind])


def decode_conflict(data: bytes | None) -> ConflictError:
    if data is None:
        return conflict(None, None, "data")
    message, table, key, kind = journal.decode(data)
    return ConflictError(message, table=table, key=None if key is None else tuple(key), kind=kind)


def prune_markers(conn: apsw.Connection, lock: oslock.ByteLock, locks: apsw.Connection) -> None:
    """Forget the commit markers of transactions that can no longer be in doubt: those gone
    from the lock database ``locks``.

    Which ones are still there is read under the merge lock, under which every marker is
    written: a transaction that registers later gets its marker later.  Ids say nothing about
    it, since they are reserved in blocks per process: a bound read before the lock, or taken
    from an id of this process, can let a marker go while its transaction is still in doubt,
    and an owner that then finds its merger dead would apply it a second time.
    """
    if not has_marker_table(conn):
        return
    with lock:
        (oldest,) = locks.execute("SELECT min(txn_id) FROM transactions").fetchone()
        if oldest is None:
            conn.execute(f"DELETE FROM {MARKER_TABLE}")
        else:
            conn.execute(f"DELETE FROM {MARKER_TABLE} WHERE txn_id < ?", (oldest,))
