"""Once warm, a transaction compiles no SQL again on any of its connections.

SQLite throws away every prepared statement of a connection when some settings change
(triggers on or off, a new authorizer), and compiles some statements afresh on every run
(``PRAGMA foreign_keys``).  Each costs a few microseconds of parsing per statement per
transaction, unseen unless counted: an authorizer runs exactly when SQLite prepares, so these
tests count its calls.  They reach into a connection's internals on purpose.
"""

from __future__ import annotations

import random
from collections import Counter

import apsw
import pytest

import sqlite_concurrent

pytestmark = pytest.mark.timeout(60)


def _transfer(conn, a, b):
    (x,) = conn.execute("SELECT balance FROM accounts WHERE id=?", (a,)).fetchone()
    (y,) = conn.execute("SELECT balance FROM accounts WHERE id=?", (b,)).fetchone()
    conn.execute("UPDATE accounts SET balance=? WHERE id=?", (x - 1, a))
    conn.execute("UPDATE accounts SET balance=? WHERE id=?", (y + 1, b))


def _counting(counts, name, inner=None, muted=None):
    def authorize(action, p1, p2, db, trigger):
        # Statements a session prepares for itself are not ours to cache.
        if not (muted is not None and muted.muted) and p1 != "table_xinfo":
            counts[name, action, p1, p2] += 1
        return inner(action, p1, p2, db, trigger) if inner else apsw.SQLITE_OK

    return authorize


@pytest.mark.parametrize("foreign_keys", [False, True])
def test_a_warm_transaction_prepares_nothing_again(db_path, foreign_keys):
    conn = sqlite_concurrent.connect(db_path)
    conn.execute("CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)")
    conn.executemany("INSERT INTO accounts VALUES (?, 100)", [(i,) for i in range(20)])
    conn.commit()
    if foreign_keys:
        conn.execute("PRAGMA foreign_keys=ON")
    rng = random.Random(1)

    def run(n):
        for _ in range(n):
            conn.transact(_transfer, *rng.sample(range(20), 2))

    run(5)  # the transaction connection exists from here on
    counts: Counter = Counter()
    txn = conn._txn_connection.conn
    txn.authorizer = _counting(counts, "transaction", txn.authorizer, conn._denied)
    conn._snapshot_conn.authorizer = _counting(counts, "snapshot")
    conn._merger.authorizer = _counting(counts, "merger")
    run(5)  # setting an authorizer expires what was prepared: compiled once more here
    counts.clear()
    run(50)
    assert dict(counts) == {}
    (total,) = conn.execute("SELECT sum(balance) FROM accounts").fetchone()
    assert total == 2000
    conn.close()
