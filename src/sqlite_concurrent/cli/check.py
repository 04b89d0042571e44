"""The ``check`` command's findings: is a database and its sidecar files sound?

:func:`run` reads, never writes: PRAGMA integrity_check on the database (APSW, read-only, so
that a process using sqlite_concurrent on the database can check it too: see
:mod:`.foreign`), the lock database ``DB-locks`` (through :mod:`.status`, APSW, read-only), the
journals ``DB-journal<PID>`` of dead processes, the size of the WAL, and every file beside the
database with whether it is in use and why it is there (:mod:`.leftovers`).  Each finding is ok,
warn or FAIL; :mod:`.display` turns them into a table and a verdict.
"""

from __future__ import annotations

import contextlib
import glob
import os
from pathlib import Path
from typing import NamedTuple

import apsw

from .. import filenames
from ..commit.checkpoint import DEFAULT_WAL_LIMIT
from ..errors import OperationalError, translate
from ..locking import lockdb_health
from . import leftover_files, status, stress

OK, WARN, FAIL = "ok", "warn", "FAIL"


class Finding(NamedTuple):
    """One row of the verdict: what was checked, ``ok``/``warn``/``FAIL``, and why."""

    name: str
    outcome: str
    detail: str


class UnreadableDatabaseError(Exception):
    """The database itself could not be read; the message says why, in one line."""


def _open_read_only(path: Path, timeout: float, immutable: bool) -> apsw.Connection:
    # Read-only: a check must not write, not even the checkpoint SQLite runs when the last
    # read-write connection to a WAL database closes.  Immutable when no -wal exists: a
    # read-only WAL connection would create -wal and -shm and could not delete them, leaving
    # files beside a database that was one file.
    uri = filenames.uri(str(path.resolve()), "mode=ro&immutable=1" if immutable else "mode=ro")
    conn = apsw.Connection(uri, flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
    conn.set_busy_timeout(int(timeout * 1000))
    return conn


def _read(db: Path, timeout: float) -> tuple[str, int, int, list[str]]:
    """journal_mode, page count, page size and integrity_check's findings.  Read again with
    locking if a -wal appeared during an immutable read that found problems: a process that
    opened the database meanwhile may have checkpointed into the file under the read."""
    immutable = not Path(f"{db}-wal").exists()
    while True:
        with contextlib.closing(_open_read_only(db, timeout, immutable)) as conn:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            size = conn.execute("PRAGMA page_size").fetchone()[0]
            problems = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        if problems == ["ok"] or not immutable or not Path(f"{db}-wal").exists():
            return mode, pages, size, problems
        immutable = False


def _lock_database(db: Path, timeout: float) -> tuple[str, str]:
    """(status, detail) of the ``-locks`` sidecar: its four tables readable, who holds what."""
    problem = _lock_database_unusable(db)
    if problem is not None:
        return FAIL, problem
    try:
        view = status.read(str(db), timeout=timeout)
    except status.StatusError as e:
        return FAIL, str(e)
    if not view.exists:
        return OK, "absent: no sqlite_concurrent process has this database open"
    detail = (
        f"{len(view.holders)} holders, {len(view.transactions)} transactions, "
        f"{len(view.locks)} locks, {len(view.waiters)} waiters"
    )
    dead = [h.pid for h in view.holders if not h.alive]
    if dead:
        pids = ", ".join(map(str, dead[:5]))
        return WARN, f"{detail}; dead holders (pid {pids}) are reaped on the next open"
    return OK, detail


def _lock_database_unusable(db: Path) -> str | None:
    """Why a connection of this user would fail on the lock database: it is damaged or not
    ours, or this user cannot write it (or create it in the database's directory)."""
    locks = f"{db}-locks"
    try:
        reason = lockdb_health.damage(locks)
    except OperationalError as e:
        return str(e)
    if reason is not None:
        return f"{locks}: {reason}; `recover` moves it aside once no process has it open"
    for path in (locks, locks + "-wal", locks + "-shm"):
        if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
            return f"{path} is not writable by this user (uid {os.getuid()}): its connections fail"
    if not os.path.exists(locks) and not os.access(db.parent, os.W_OK | os.X_OK):
        return f"{db.parent} is not writable by this user: its connections cannot create {locks}"
    return None


def _journals(db: Path) -> tuple[str, str]:
    found = sorted(glob.glob(glob.escape(str(db)) + "-journal[0-9]*"))
    suffixes = [(p, p[len(str(db)) + len("-journal") :]) for p in found]
    pids = [(p, int(pid)) for p, pid in suffixes if pid.isdigit()]
    dead = []
    for p, pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            dead.append(os.path.basename(p))
        except PermissionError:
            pass  # alive, someone else's
    if dead:
        return FAIL, f"hot journals of dead processes: {', '.join(dead[:5])} (run recover)"
    quarantined = [os.path.basename(p) for p, suffix in suffixes if ".quarantined-" in suffix]
    if quarantined:
        # Recovery set them aside: they could not be trusted and were never applied.
        return WARN, f"quarantined journals to inspect, then delete: {', '.join(quarantined[:5])}"
    return OK, f"{len(pids)} journals, all of live processes" if pids else "none"


def _files(db: Path) -> tuple[str, str]:
    """(status, detail) of what is beside the database: in use, or left and why."""
    found = leftover_files.describe(str(db))
    if not found:
        return OK, "none: the database is one file"
    idle = [f for f in found if not f.live]
    if not idle:
        return OK, f"in use by processes that have it open: {', '.join(f.name for f in found)}"
    return WARN, "; ".join(f"{f.name}: {f.why}" for f in idle[:5])


def _wal(db: Path) -> tuple[str, str]:
    wal = Path(f"{db}-wal")
    wal_size = wal.stat().st_size if wal.exists() else 0
    if wal_size > DEFAULT_WAL_LIMIT:
        return (
            WARN,
            f"{wal_size:,} bytes, over the {DEFAULT_WAL_LIMIT:,} "
            "byte checkpoint threshold (a long-running reader may hold it)",
        )
    return OK, f"{wal_size:,} bytes" if wal.exists() else "no -wal file"


def run(db: Path, timeout: float) -> list[Finding]:
    """Check ``db`` and its sidecar files, changing nothing.

    :raises UnreadableDatabaseError: the database could not be opened or read at all.
    """
    db = db.resolve()  # its sidecars are beside the file a link names, as connect() puts them
    try:
        mode, pages, size, problems = _read(db, timeout)
    except apsw.Error as e:
        reason = stress.describe_sqlite_error(str(db), translate(e), timeout)
        raise UnreadableDatabaseError(reason) from None
    findings = [Finding("database", OK, f"{pages:,} pages of {size:,} bytes, journal_mode {mode}")]
    if problems == ["ok"]:
        findings.append(Finding("integrity_check", OK, "ok"))
    else:
        findings.append(Finding("integrity_check", FAIL, "; ".join(problems[:3])))
    findings.append(Finding("lock database", *_lock_database(db, timeout)))
    findings.append(Finding("journals", *_journals(db)))
    findings.append(Finding("WAL", *_wal(db)))
    findings.append(Finding("files beside", *_files(db)))
    return findings


def named(findings: list[Finding], outcome: str) -> list[str]:
    """The names of the findings with ``outcome``, in order."""
    return [f.name for f in findings if f.outcome == outcome]
