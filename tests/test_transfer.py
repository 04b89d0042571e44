"""Bank transfers from several processes keep the total balance constant."""

from __future__ import annotations

import pytest
from conftest import SPAWN, integrity_ok, make_accounts, stock_apsw
from workers import transfers

ACCOUNTS = 100
START_BALANCE = 1000


@pytest.mark.timeout(180)
def test_transfers_from_four_processes_keep_the_sum(db_path):
    make_accounts(db_path, ACCOUNTS, START_BALANCE)
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
