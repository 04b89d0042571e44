"""Bank transfers from several processes keep the total balance constant."""

from __future__ import annotations

import pytest
from conftest import SPAWN, integrity_ok, stock_apsw
from workers import transfers

import sqlite_concurrent

ACCOUNTS = 100
START_BALANCE = 1000


def _make_accounts(path: str) -> None:
    conn = sqlite_concurrent.connect(path)
    conn.execute("CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)")
    conn.executemany(
        "INSERT INTO accounts VALUES (?, ?)", [(i, START_BALANCE) for i in range(ACCOUNTS)]
    )
    conn.commit()
    conn.close()


@pytest.mark.timeout(180)
def test_transfers_from_four_processes_keep_the_sum(db_path):
    _make_accounts(db_path)
    start, queue = SPAWN.Event(), SPAWN.Queue()
    procs = [
        SPAWN.Process(target=transfers, args=(start, queue, db_path, seed, 300, ACCOUNTS))
        for seed in range(4)
    ]
    for p in procs:
        p.start()
    start.set()
    # While they run, a stock reader checks that every committed state it sees keeps the sum.
    reader = stock_apsw(db_path)
    sums = set()
    while any(p.is_alive() for p in procs) and queue.empty():
        sums.add(reader.execute("SELECT sum(balance), count(*) FROM accounts").fetchone())
    results = [queue.get(timeout=170) for _ in procs]
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    assert results == [300, 300, 300, 300]
    sums.add(reader.execute("SELECT sum(balance), count(*) FROM accounts").fetchone())
    assert sums == {(ACCOUNTS * START_BALANCE, ACCOUNTS)}
    # Some money actually moved.
    assert (
        reader.execute(
            "SELECT count(*) FROM accounts WHERE balance != ?", (START_BALANCE,)
        ).fetchone()[0]
        > 50
    )
    reader.close()
    assert integrity_ok(db_path)
