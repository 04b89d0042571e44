"""Cleaning up after processes that died (architecture.md, "Recovery").

A dead process's SQLite work needs nothing from us: its merge either committed (SQLite's WAL
made it durable) or did not (SQLite discards it); where another process merged it, the commit
marker written in the same SQLite transaction says which.  What it leaves behind is in the lock
database (its holder row, its transactions, their locks and queue places) and its journal.
Recovery releases the former, deletes the journal (or quarantines it when it cannot be trusted;
nothing in it is ever applied) and reports, for each transaction, whether another process
committed it.  It runs whenever a connection opens, whenever a lock waiter sees a holder die,
and on demand (``sqlite-concurrent recover``).  Quarantined journals past their age go at
the same times (:func:`.leftovers.prune_quarantined`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import apsw

from .. import filenames
from ..commit import merge
from ..errors import translate
from ..locking import lockdb_health
from ..locking.lockdb import LockDB
from ..locking.reaping import Reaped
from ..process import holding, leftovers
from ..storage import journal

log = logging.getLogger("sqlite_concurrent")


@dataclass(frozen=True)
class Recovered:
    pid: int
    locks_released: int
    # Its transactions that another process's merge committed for it (their marker exists).
    committed: tuple[int, ...]
    # The others: each committed in full by the process itself before it died, or not at all
    # (a process that commits its own transaction writes no marker: SQLite tells it the outcome).
    discarded: tuple[int, ...]
    journal: str = "none"  # its journal: "none", "deleted", "quarantined" or "left"
    journal_detail: str = ""  # why it was quarantined, and where it went


def on_open(db_path: str, reaped: list[Reaped]) -> None:
    """As a connection opens ``db_path`` (architecture.md, "Recovery"): dead holders were
    reaped as this process registered (``reaped``); journals of processes the lock database
    never knew (or that it lost) go too, and quarantined journals past their age."""
    loose = [journal.dispose(db_path, pid) for pid in journal.orphans(db_path)]
    leftovers.prune_quarantined(db_path)
    for found in [r.journal for r in reaped] + loose:
        if found is not None and found.action != "deleted":
            log.warning(
                "sqlite_concurrent: journal %s %s: %s", found.path, found.action, found.reason
            )


def recover(db_path: str) -> list[Recovered]:
    """Release everything dead processes hold on ``db_path``, dispose of their journals, and
    report what each left.  Journals whose process is gone but which the lock database does not
    know (it was deleted, or the process died before registering) are disposed of too.

    A lock database that is damaged or another application's is moved aside first when no
    live process uses it (:func:`.lockdb_health.ensure_usable`, which logs a warning).

    :raises OperationalError: the lock database is damaged but in use, or cannot be used.
    :raises DatabaseError: the database cannot be opened.
    """
    db_path = os.path.realpath(db_path)  # as connect() resolves it to place the sidecars
    lockdb_health.ensure_usable(db_path, open_here=LockDB.open_in_process(db_path))
    reaped = []
    if os.path.exists(db_path + "-locks"):
        lockdb = LockDB(db_path)
        try:
            reaped = lockdb.reap()
        finally:
            lockdb.close()
            holding.release_lock_database(db_path)
    leftovers.prune_quarantined(db_path)
    known = {r.pid for r in reaped}
    loose = [(pid, journal.dispose(db_path, pid)) for pid in journal.orphans(db_path)]
    loose = [(pid, d) for pid, d in loose if pid not in known and d is not None]
    if not reaped and not loose:
        return []
    try:
        db = apsw.Connection(*filenames.for_sqlite(db_path, apsw.SQLITE_OPEN_READONLY))
    except apsw.Error as e:
        raise translate(e) from e
    try:
        report = []
        entries = [(r.pid, r.locks, r.txn_ids, r.journal) for r in reaped]
        entries += [(pid, 0, d.txn_ids, d) for pid, d in loose]
        for pid, nlocks, txn_ids, disposal in entries:
            ids = tuple(dict.fromkeys(txn_ids + (disposal.txn_ids if disposal else ())))
            done = tuple(t for t in ids if merge.is_committed(db, t))
            detail = ""
            if disposal is not None and disposal.action == "quarantined":
                detail = f"{disposal.reason} (moved to {disposal.quarantined_as})"
            report.append(
                Recovered(
                    pid,
                    nlocks,
                    done,
                    tuple(t for t in ids if t not in done),
                    disposal.action if disposal else "none",
                    detail,
                )
            )
        return report
    finally:
        # Not a connection of ours the process keeps: this is the CLI's own, short-lived one,
        # opened after the lock work is done, in a process that holds no other lock on db.
        db.close()
