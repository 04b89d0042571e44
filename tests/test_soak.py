"""Soak: writers doing bank transfers while a killer SIGKILLs random ones and restarts them.

Every acknowledged transfer (appended to a side log after commit() returned) must be in the
database, the total must hold, and integrity_check must pass.  CI runs a short version; set
SQLITE_CONCURRENT_KILL_SOAK_KILLS for a longer one.
"""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path

import pytest
from conftest import SPAWN, integrity_ok, lock_rows, stock_apsw
from test_crash import ACCOUNTS, BALANCE, _setup
from workers import soak_writer

WRITERS = 8
KILLS = int(os.environ.get("SQLITE_CONCURRENT_KILL_SOAK_KILLS", "24"))


def _acked(log: Path) -> set[str]:
    return set(log.read_text().split()) if log.exists() else set()


@pytest.mark.soak
@pytest.mark.timeout(600)
@pytest.mark.parametrize("level", ["row", "table"])
def test_kill_random_writers_and_restart_them(db_path, tmp_path, level):
    _setup(db_path)
    rng = random.Random(7)
    stop = str(tmp_path / "stop")
    logs = [tmp_path / f"acks-{w}.log" for w in range(WRITERS)]
    generation = [0] * WRITERS

    def spawn(w: int):
        generation[w] += 1
        # A new seed per life, so transfer ids never repeat across restarts.
        proc = SPAWN.Process(
            target=soak_writer, args=(db_path, level, str(logs[w]), w * 1000 + generation[w], stop)
        )
        proc.start()
        return proc

    procs = [spawn(w) for w in range(WRITERS)]
    kills = 0
    try:
        while kills < KILLS:
            w = rng.randrange(WRITERS)
            # Kill only after this life acknowledged something: progress, not a time, paces it.
            before = len(_acked(logs[w]))
            while len(_acked(logs[w])) <= before:
                assert procs[w].is_alive(), f"writer {w} died on its own"
            os.kill(procs[w].pid, signal.SIGKILL)
            procs[w].join(30)
            procs[w] = spawn(w)
            kills += 1
    finally:
        Path(stop).touch()
        for p in procs:
            p.join(60)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]

    acked = set().union(*(_acked(log) for log in logs))
    conn = stock_apsw(db_path)
    present = {t for (t,) in conn.execute("SELECT id FROM transfers")}
    assert acked <= present, f"{len(acked - present)} acknowledged transfers lost"
    assert conn.execute("SELECT sum(balance), count(*) FROM accounts").fetchone() == (
        ACCOUNTS * BALANCE,
        ACCOUNTS,
    )
    conn.close()
    assert integrity_ok(db_path)
    assert lock_rows(db_path, "SELECT count(*) FROM locks") == [(0,)]
    assert kills == KILLS and len(acked) > KILLS
