"""Killing a writer at every named point of the commit path, at every lock level.

After each kill: every commit acknowledged to the client is present, no partial transaction is
visible, integrity_check is ok, nothing of the dead process is left in the lock database once
another process has looked, and a surviving process carries on (over the same rows, so it must
get past whatever the dead one held).
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest
from conftest import SPAWN, integrity_ok, lock_rows, stock_apsw
from workers import (
    crash_direct_victim,
    crash_escalating_victim,
    crash_replaying_victim,
    crash_rerun_victim,
    crash_survivor,
    crash_victim,
)

import sqlite_concurrent
from sqlite_concurrent import crashpoints
from sqlite_concurrent.engine import ways

SRC = Path(sqlite_concurrent.__file__).parent
ACCOUNTS, BALANCE = 20, 1000


def _setup(path: str) -> None:
    conn = sqlite_concurrent.connect(path)
    conn.execute("CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)")
    conn.execute("CREATE TABLE transfers(id TEXT PRIMARY KEY, amount INTEGER NOT NULL)")
    conn.executemany("INSERT INTO accounts VALUES (?, ?)", [(i, BALANCE) for i in range(ACCOUNTS)])
    conn.commit()
    conn.close()


# At the table level a transaction's conflicts come at its statements (it waits for table
# locks), never at its merge, and nothing runs directly while it is live: nothing there is
# run again.
CASES = [
    (point, level)
    for point in crashpoints.POINTS
    for level in ("row", "page", "table")
    if not (point in ("rerun.ran", "escalate.replayed") and level == "table")
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("point", "level"), CASES)
def test_kill_at_point(db_path, tmp_path, point, level):
    _setup(db_path)
    ack_log = str(tmp_path / "acks.log")
    # Dies on its third visit, so some commits were acknowledged before.
    os.environ[crashpoints.ENV] = f"{point}@3"
    # Each way of running a transaction reaches its own points (sqlite_concurrent.engine.ways).
    os.environ[ways.ENV] = "optimistic"  # the direct and escalating victims say their mode
    victim_fn = {
        "direct": crash_direct_victim,
        "escalate": crash_escalating_victim,
        "rerun": crash_rerun_victim,
    }.get(point.split(".")[0], crash_victim)
    if point == "escalate.replayed":
        victim_fn = crash_replaying_victim
    try:
        victim = SPAWN.Process(target=victim_fn, args=(db_path, level, ack_log, 1, 50))
        victim.start()
    finally:
        del os.environ[crashpoints.ENV]
        del os.environ[ways.ENV]
    victim.join(60)
    assert victim.exitcode == -signal.SIGKILL, f"did not die at {point}"

    start, queue = SPAWN.Event(), SPAWN.Queue()
    survivor = SPAWN.Process(target=crash_survivor, args=(start, queue, db_path, level, 2, 30))
    survivor.start()
    start.set()
    took = queue.get(timeout=90)
    survivor.join(30)
    assert survivor.exitcode == 0 and isinstance(took, float), took

    acked = Path(ack_log).read_text().split() if Path(ack_log).exists() else []
    conn = stock_apsw(db_path)
    present = {tid for (tid,) in conn.execute("SELECT id FROM transfers")}
    assert set(acked) <= present, "an acknowledged commit was lost"
    assert len([t for t in present if t.startswith("s2-")]) == 30
    # A partial transfer would change the total.
    assert conn.execute("SELECT sum(balance), count(*) FROM accounts").fetchone() == (
        ACCOUNTS * BALANCE,
        ACCOUNTS,
    )
    conn.close()
    assert integrity_ok(db_path)
    mine = (victim.pid,)
    assert lock_rows(db_path, "SELECT count(*) FROM transactions WHERE pid = ?", mine) == [(0,)]
    assert lock_rows(db_path, "SELECT count(*) FROM locks") == [(0,)]
    assert lock_rows(db_path, "SELECT count(*) FROM holders WHERE pid = ?", mine) == [(0,)]


def test_every_crash_point_is_placed_and_declared():
    """Meta-test: the points the tests above kill at are exactly those in the code."""
    placed = set()
    for module in SRC.rglob("*.py"):
        placed |= set(re.findall(r'crashpoints\.reach\("([^"]+)"\)', module.read_text()))
    assert placed == set(crashpoints.POINTS)


def test_bad_crash_spec_is_refused():
    with pytest.raises(ValueError, match="expected <point>"):
        crashpoints._parse("no.such.point")
