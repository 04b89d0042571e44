"""Forgetting the processes that died holding the lock database (architecture.md, "Recovery").

A holder is dead when no process with its pid and start time runs (:mod:`.processes`).  Its
holder row, transactions, locks and queue places are deleted in the lock database's write
transaction that notices it (a connection registering, a lock waiter, ``recover``); its journal
is disposed of after that write (:func:`.journal.dispose`).  Reporting what each dead process
left, and whether its transactions committed, is :mod:`sqlite_concurrent.engine.recovery`'s.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import apsw

from ..storage import journal
from .processes import holder_alive


@dataclass(frozen=True)
class Reaped:
    pid: int
    transactions: int
    locks: int
    txn_ids: tuple[int, ...] = ()
    journal: journal.Disposal | None = None  # what became of its journal file


def reap_dead(c: apsw.Connection, pid: int, start_time: float) -> list[Reaped]:
    """Inside a write transaction on the lock database ``c``: forget every dead holder (not the
    process ``pid`` started at ``start_time``, the caller) and what it held."""
    reaped = []
    holders = list(c.execute("SELECT pid, start_time FROM holders"))
    # Transactions whose process has no holder row (start time unknown): judged by pid.
    holders += list(
        c.execute(
            "SELECT DISTINCT pid, 0 FROM transactions WHERE pid NOT IN (SELECT pid FROM holders)"
        )
    )
    for other, started in holders:
        if other == pid and started == start_time:
            continue
        if holder_alive(other, started):
            continue
        txns = [t for (t,) in c.execute("SELECT txn_id FROM transactions WHERE pid=?", (other,))]
        nlocks = 0
        for txn_id in txns:
            nlocks += drop_txn(c, txn_id)[0]
        c.execute("DELETE FROM holders WHERE pid=?", (other,))
        reaped.append(Reaped(other, len(txns), nlocks, tuple(txns)))
    return reaped


def drop_txn(c: apsw.Connection, txn_id: int) -> tuple[int, int]:
    """Forget a transaction and what it held; returns (locks, queue places) dropped."""
    c.execute("DELETE FROM locks WHERE txn_id=?", (txn_id,))
    nlocks = c.changes()
    c.execute("DELETE FROM waiters WHERE txn_id=?", (txn_id,))
    nwaits = c.changes()
    c.execute("DELETE FROM transactions WHERE txn_id=?", (txn_id,))
    return nlocks, nwaits


def dispose_journals(locks_path: str, reaped: list[Reaped]) -> list[Reaped]:
    """After the lock database's write: the journals of the dead holders go too."""
    db_path = locks_path[: -len("-locks")]
    return [dataclasses.replace(r, journal=journal.dispose(db_path, r.pid)) for r in reaped]
