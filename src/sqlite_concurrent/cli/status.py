"""A read-only view of the lock database ``<db>-locks``: who holds what, who waits, for how long.

``sqlite-concurrent status`` is built on :func:`read`.  It never changes lock state: the lock
database is opened read-only through APSW (the library every ``sqlite_concurrent`` process uses,
so its POSIX locks are seen by theirs), never through :class:`.lockdb.LockDB`, whose constructor
writes.  All four tables are read in one read transaction, so the view is consistent.

When no ``-locks-wal`` file exists, no connection has the lock database open and everything is
in the main file: it is then opened ``immutable`` so that reading does not create the ``-wal``
and ``-shm`` files (a read-only WAL connection otherwise creates them and cannot delete them).

Transactions older than ``old_after`` seconds are flagged: each open transaction pins a WAL
snapshot, so while it stays open a RESTART/TRUNCATE checkpoint cannot reset the WAL of the main
database (architecture.md, "Checkpoints", issue 7: reported, never killed).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import urllib.parse
from dataclasses import asdict, dataclass, field
from typing import Any

import apsw
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..commit.checkpoint import DEFAULT_WAL_LIMIT
from ..errors import OperationalError
from ..locking.processes import holder_alive
from ..storage import sidecar, wal_readers
from . import leftover_files

# Bump when a key of :meth:`Status.to_json` changes meaning or disappears (adding keys is fine).
JSON_FORMAT = 1
DEFAULT_OLD_AFTER = 60.0
DEFAULT_TIMEOUT = 5.0
# The rich tables show at most this many locks (a statement can hold thousands of row locks);
# the JSON always has all of them.
SHOWN_LOCKS = 100


class StatusError(Exception):
    """The lock database cannot be read; the message is one line for the user."""


@dataclass(frozen=True)
class Holder:
    pid: int
    alive: bool
    start_time: int  # clock ticks since boot (Linux /proc/<pid>/stat field 22); 0 if unknown
    started_at: float | None  # the same as a Unix time, when it can be worked out
    registered_at: float
    registered_age_s: float
    argv: str


@dataclass(frozen=True)
class Transaction:
    txn_id: int
    pid: int
    alive: bool
    lock_level: str
    state: str
    began_at: float
    age_s: float
    snapshot_frame: int | None
    old: bool


@dataclass(frozen=True)
class Lock:
    resource: str
    mode: str
    txn_id: int
    pid: int | None
    granted_at: float
    age_s: float


@dataclass(frozen=True)
class Waiter:
    seq: int
    position: int  # 1 = next in line for its resource
    txn_id: int
    pid: int | None
    resource: str
    mode: str
    since: float
    waiting_s: float
    blocked_by: list[int]  # transactions holding a conflicting lock or queued earlier


@dataclass
class Status:
    database: str
    lock_database: str
    exists: bool
    taken_at: float
    old_after_s: float
    wal_bytes: int
    wal_exists: bool
    schema_version: int | None = None
    holders: list[Holder] = field(default_factory=list)
    transactions: list[Transaction] = field(default_factory=list)
    locks: list[Lock] = field(default_factory=list)
    waiters: list[Waiter] = field(default_factory=list)
    # Readers outside sqlite_concurrent holding a WAL read lock: while one stays, no checkpoint
    # can reset the WAL (see :mod:`.wal_readers`).
    wal_pins: list[wal_readers.Pin] = field(default_factory=list)
    litestream: bool = False
    # Every file beside the database, whether it is in use and why it is there.
    files: list[leftover_files.Leftover] = field(default_factory=list)

    @property
    def old(self) -> list[Transaction]:
        return [t for t in self.transactions if t.old]

    def notes(self) -> list[str]:
        """What a person should know, one sentence each."""
        left = [f.name for f in self.files if not f.live]
        leftover = (
            [
                f"Not in use: {', '.join(left[:5])}{' ...' if len(left) > 5 else ''} "
                "(see the files table for why each is there)."
            ]
            if left
            else []
        )
        if not self.exists:
            return [
                f"No sqlite-concurrent process has this database open: {self.lock_database} "
                "does not exist (the first open creates it, the last close removes it).",
                *self._wal_notes(),
                *leftover,
            ]
        notes = self._wal_notes()
        old = self.old
        if old:
            which = ", ".join(f"{t.txn_id} (pid {t.pid}, {t.age_s:,.1f} s)" for t in old[:5])
            more = f" and {len(old) - 5} more" if len(old) > 5 else ""
            notes.append(
                f"{len(old)} old transaction{'s' if len(old) != 1 else ''}, open longer than "
                f"{self.old_after_s:g} s: {which}{more}. While open, each pins a WAL snapshot, "
                "so the WAL cannot be reset by a checkpoint and keeps growing; commit or roll "
                "them back."
            )
        dead = [h.pid for h in self.holders if not h.alive]
        dead += [t.pid for t in self.transactions if not t.alive and t.pid not in dead]
        if dead:
            notes.append(
                f"Dead processes (pid {', '.join(map(str, dead[:5]))}) still hold entries; "
                "the next process that opens or waits on the database reaps them."
            )
        if self.wal_bytes > DEFAULT_WAL_LIMIT:
            notes.append(
                f"The WAL is {self.wal_bytes:,} bytes, over the default {DEFAULT_WAL_LIMIT:,} "
                "byte checkpoint threshold."
            )
        return notes + leftover

    def _wal_notes(self) -> list[str]:
        notes = [
            f"The WAL is pinned: {pin.describe()}, outside sqlite_concurrent; until it ends "
            "its read transaction no checkpoint can reset the WAL (writers are not held back "
            "for one)."
            for pin in self.wal_pins
        ]
        if self.litestream:
            notes.append(
                "Litestream replicates this database: sqlite_concurrent runs no checkpoint of "
                "its own and leaves the WAL's size to Litestream."
            )
        return notes

    def to_json(self) -> dict[str, Any]:
        """The ``status --json`` document; its shape is documented in the README."""
        return {
            "format": JSON_FORMAT,
            "database": self.database,
            "lock_database": self.lock_database,
            "lock_database_exists": self.exists,
            "schema_version": self.schema_version,
            "taken_at": self.taken_at,
            "old_after_s": self.old_after_s,
            "wal": {
                "bytes": self.wal_bytes,
                "exists": self.wal_exists,
                "default_limit_bytes": DEFAULT_WAL_LIMIT,
                "pinned_by": [asdict(pin) for pin in self.wal_pins],
                "litestream": self.litestream,
            },
            "holders": [asdict(h) for h in self.holders],
            "transactions": [asdict(t) for t in self.transactions],
            "locks": [asdict(lock) for lock in self.locks],
            "waiters": [asdict(w) for w in self.waiters],
            "old_transactions": [t.txn_id for t in self.old],
            "files": [asdict(f) for f in self.files],
            "notes": self.notes(),
        }


def _boot_time() -> float | None:
    try:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def _started_at(start_time: int, boot: float | None) -> float | None:
    if not start_time or boot is None:
        return None
    return boot + start_time / os.sysconf("SC_CLK_TCK")


def _open(path: str, immutable: bool, timeout: float) -> apsw.Connection:
    uri = f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro"
    if immutable:
        uri += "&immutable=1"
    # Never through a link planted at -locks (sidecar.py), even to read.
    flags = apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI | apsw.SQLITE_OPEN_NOFOLLOW
    conn = apsw.Connection(uri, flags=flags)
    conn.set_busy_timeout(int(timeout * 1000))
    return conn


def _read_tables(conn: apsw.Connection) -> dict[str, list[tuple[Any, ...]]]:
    conn.execute("BEGIN")  # one read transaction: a consistent view of all tables
    try:
        rows = {
            "meta": conn.execute("SELECT key, value FROM meta").fetchall(),
            "holders": conn.execute(
                "SELECT pid, start_time, registered_at, argv FROM holders ORDER BY pid"
            ).fetchall(),
            "transactions": conn.execute(
                "SELECT txn_id, pid, lock_level, state, began_at, snapshot_frame "
                "FROM transactions ORDER BY txn_id"
            ).fetchall(),
            "locks": conn.execute(
                "SELECT l.resource, l.mode, l.txn_id, t.pid, l.granted_at FROM locks l "
                "LEFT JOIN transactions t USING (txn_id) ORDER BY l.resource, l.txn_id"
            ).fetchall(),
            "waiters": conn.execute(
                "SELECT w.seq, w.txn_id, t.pid, w.resource, w.mode, w.since FROM waiters w "
                "LEFT JOIN transactions t USING (txn_id) ORDER BY w.seq"
            ).fetchall(),
        }
    finally:
        with contextlib.suppress(apsw.Error):
            conn.execute("COMMIT")
    return rows


def _rows(path: str, timeout: float) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows.  Opened ``immutable`` when no connection has the lock database open
    (no ``-wal``); if that read fails and a ``-wal`` has appeared since (a connection opened it
    meanwhile), read again with locking."""
    immutable = not os.path.exists(path + "-wal")
    while True:
        conn = _open(path, immutable, timeout)
        try:
            return _read_tables(conn)
        except apsw.Error:
            if not immutable or not os.path.exists(path + "-wal"):
                raise
            immutable = False
        finally:
            conn.close()


def _age(now: float, then: float) -> float:
    # Milliseconds are plenty for a person or a script; a clock stepped back reads as 0.
    return round(max(0.0, now - then), 3)


def _conflicts(request: tuple[str, str], held: tuple[str, str]) -> bool:
    """Whether a lock ``held`` = (resource, mode) blocks ``request``, as the lock database
    decides it: same resource and either is X; a table lock blocks its rows and any row lock
    blocks its table (resources ``table:<name>``, ``row:<table>:<rowid>``)."""
    (want, want_mode), (have, have_mode) = request, held
    if want == have:
        return want_mode == "X" or have_mode == "X"
    if want.startswith("row:") and have.startswith("table:"):
        return want[4:].rsplit(":", 1)[0] == have[6:]
    if want.startswith("table:") and have.startswith("row:"):
        return have[4:].rsplit(":", 1)[0] == want[6:]
    return False


def read(
    db_path: str, *, old_after: float = DEFAULT_OLD_AFTER, timeout: float = DEFAULT_TIMEOUT
) -> Status:
    """A snapshot of ``<db_path>-locks`` and the size of ``<db_path>-wal``.

    A missing lock database is not an error: the result has ``exists`` False and no rows.

    :param timeout: seconds to wait while another connection holds the lock database locked
        (only WAL recovery or an exclusive lock does: readers never wait for its writers).

    :raises StatusError: the lock database exists but cannot be read as one.
    """
    db_path = os.path.realpath(db_path)  # as connect() resolves it to place the sidecars
    lock_path = f"{db_path}-locks"
    try:
        sidecar.ensure_sqlite_files(lock_path)
    except OperationalError as e:
        raise StatusError(str(e)) from None
    try:
        wal_bytes, wal_exists = os.stat(f"{db_path}-wal").st_size, True
    except FileNotFoundError:
        wal_bytes, wal_exists = 0, False
    status = Status(
        database=os.path.abspath(db_path),
        lock_database=os.path.abspath(lock_path),
        exists=os.path.exists(lock_path),
        taken_at=time.time(),
        old_after_s=old_after,
        wal_bytes=wal_bytes,
        wal_exists=wal_exists,
        litestream=wal_readers.litestream_managed(db_path),
        files=leftover_files.describe(db_path),
    )
    if not status.exists:
        status.wal_pins = wal_readers.pins(f"{db_path}-shm")
        return status
    if os.path.isdir(lock_path):
        raise StatusError(f"{lock_path} is a directory, not a lock database")
    if os.path.getsize(lock_path) == 0 and not os.path.exists(lock_path + "-wal"):
        return status  # created this instant by a first connection: nothing in it yet
    rows = _read_rows(lock_path, timeout)
    with contextlib.suppress(TypeError, ValueError):
        status.schema_version = int(dict(rows["meta"]).get("schema_version"))  # type: ignore[arg-type]
    _add_holders(status, rows["holders"])
    _add_transactions(status, rows["transactions"])
    _add_locks_and_waiters(status, rows["locks"], rows["waiters"])
    ours = frozenset(h.pid for h in status.holders if h.alive)
    status.wal_pins = wal_readers.pins(f"{db_path}-shm", besides=ours)
    return status


def _read_rows(lock_path: str, timeout: float) -> dict[str, list[tuple[Any, ...]]]:
    try:
        return _rows(lock_path, timeout)
    except apsw.NotADBError:
        raise StatusError(f"{lock_path} is not a SQLite database") from None
    except apsw.SQLError as e:
        raise StatusError(f"{lock_path} is not a sqlite-concurrent lock database ({e})") from None
    except apsw.BusyError:
        raise StatusError(
            f"{lock_path} is locked by another connection (waited {timeout:g} s); try again"
        ) from None
    except apsw.Error as e:
        raise StatusError(f"cannot read {lock_path}: {e}") from None


def _add_holders(status: Status, rows: list[tuple[Any, ...]]) -> None:
    boot = _boot_time() if sys.platform == "linux" else None
    for pid, start, registered, argv in rows:
        status.holders.append(
            Holder(
                pid,
                holder_alive(pid, start),
                start,
                _started_at(start, boot),
                registered,
                _age(status.taken_at, registered),
                argv,
            )
        )


def _add_transactions(status: Status, rows: list[tuple[Any, ...]]) -> None:
    alive = {h.pid: h.alive for h in status.holders}
    for txn_id, pid, level, state, began, frame in rows:
        age = _age(status.taken_at, began)
        if pid not in alive:  # a transaction without a holder row: judged by its pid alone
            alive[pid] = holder_alive(pid, 0)
        old = age >= status.old_after_s
        status.transactions.append(
            Transaction(txn_id, pid, alive[pid], level, state, began, age, frame, old)
        )


def _add_locks_and_waiters(
    status: Status, locks: list[tuple[Any, ...]], waiters: list[tuple[Any, ...]]
) -> None:
    """Locks as granted, and each waiter with its place in its queue and whom it waits for."""
    now = status.taken_at
    held: list[tuple[str, str, int]] = []
    for resource, mode, txn_id, pid, granted in locks:
        status.locks.append(Lock(resource, mode, txn_id, pid, granted, _age(now, granted)))
        held.append((resource, mode, txn_id))
    queued: dict[str, list[int]] = {}
    for seq, txn_id, pid, resource, mode, since in waiters:
        ahead = queued.setdefault(resource, [])
        blocked_by = sorted(
            {t for r, m, t in held if t != txn_id and _conflicts((resource, mode), (r, m))}
            | {t for t in ahead if t != txn_id}
        )
        status.waiters.append(
            Waiter(
                seq,
                len(ahead) + 1,
                txn_id,
                pid,
                resource,
                mode,
                since,
                _age(now, since),
                blocked_by,
            )
        )
        ahead.append(txn_id)


# -- rendering for people ------------------------------------------------------------------------


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _pid(pid: int | None) -> str:
    return "-" if pid is None else str(pid)


def _table(title: str, columns: list[str], right: set[str]) -> Table:
    table = Table(title=title, title_justify="left")
    for name in columns:
        table.add_column(name, justify="right" if name in right else "left")
    return table


def render(status: Status) -> RenderableType:
    """Rich tables: holders, transactions, locks and waiters, then the notes."""
    if not status.exists:
        notes = status.notes()
        return Group(
            Text(notes[0]),
            Text(_wal_line(status)),
            *([_files_table(status)] if status.files else []),
            *(Text(note, style="yellow") for note in notes[1:]),
        )
    parts: list[RenderableType] = [
        Text(
            f"lock database {status.lock_database} (schema {status.schema_version}); "
            f"{_wal_line(status)}"
        )
    ]
    holders, txns = _holders_table(status), _transactions_table(status)
    locks, waiters = _locks_table(status), _waiters_table(status)
    for table, rows, what in (
        (holders, status.holders, "holders"),
        (txns, status.transactions, "transactions"),
        (locks, status.locks, "locks"),
        (waiters, status.waiters, "waiters"),
    ):
        parts.append(table if rows else Text(f"{what}: none"))
    parts.append(_files_table(status))
    for note in status.notes():
        parts.append(Text(note, style="yellow"))
    return Group(*parts)


def _holders_table(status: Status) -> Table:
    holders = _table(
        "holders", ["pid", "alive", "started", "registered age s", "argv"], {"registered age s"}
    )
    for h in status.holders:
        holders.add_row(
            str(h.pid),
            "[green]alive[/]" if h.alive else "[bold red]dead[/]",
            _when(h.started_at),
            f"{h.registered_age_s:,.1f}",
            Text(h.argv, overflow="fold"),
        )
    return holders


def _transactions_table(status: Status) -> Table:
    # The engine records a snapshot's WAL frame only in some states: show it when there is one.
    frames = any(t.snapshot_frame is not None for t in status.transactions)
    columns = ["txn", "pid", "lock level", "state", "age s", "flag"]
    txns = _table(
        "transactions",
        columns[:5] + ["snapshot frame"] * frames + columns[5:],
        {"txn", "age s", "snapshot frame"},
    )
    for t in status.transactions:
        cells = [
            str(t.txn_id),
            str(t.pid) if t.alive else f"{t.pid} [bold red](dead)[/]",
            Text(t.lock_level),
            Text(t.state),
            f"{t.age_s:,.1f}",
        ]
        if frames:
            cells.append(_pid(t.snapshot_frame))
        cells.append("[bold yellow]old (pins the WAL)[/]" if t.old else "")
        txns.add_row(*cells)
    return txns


def _locks_table(status: Status) -> Table:
    locks = _table("locks", ["resource", "mode", "txn", "pid", "age s"], {"txn", "age s"})
    for lock in status.locks[:SHOWN_LOCKS]:
        locks.add_row(
            Text(lock.resource),
            Text(lock.mode),
            str(lock.txn_id),
            _pid(lock.pid),
            f"{lock.age_s:,.1f}",
        )
    if len(status.locks) > SHOWN_LOCKS:
        locks.caption = f"first {SHOWN_LOCKS} of {len(status.locks):,} locks; --json has all"
    return locks


def _waiters_table(status: Status) -> Table:
    waiters = _table(
        "waiters (queue order)",
        ["#", "txn", "pid", "resource", "mode", "waiting s", "blocked by txn"],
        {"#", "txn", "waiting s"},
    )
    for w in status.waiters:
        waiters.add_row(
            str(w.position),
            str(w.txn_id),
            _pid(w.pid),
            Text(w.resource),
            Text(w.mode),
            f"{w.waiting_s:,.1f}",
            ", ".join(map(str, w.blocked_by)) or "-",
        )
    return waiters


def _files_table(status: Status) -> Table:
    files = _table("files beside the database", ["file", "in use", "why it is there"], set())
    for f in status.files:
        files.add_row(Text(f.name), "yes" if f.live else "[yellow]no[/]", Text(f.why))
    return files


def _wal_line(status: Status) -> str:
    name = os.path.basename(status.database)
    if not status.wal_exists:
        return f"WAL of {name}: none (no -wal file)"
    return f"WAL of {name}: {status.wal_bytes:,} bytes"
