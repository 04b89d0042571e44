"""`sqlite-concurrent recover` cleans up after a process killed holding locks."""

from __future__ import annotations

import json
import os
import signal

import pytest
from conftest import SPAWN, stock_apsw
from typer.testing import CliRunner
from workers import hold_locks_until_killed

import sqlite_concurrent
from sqlite_concurrent.cli.app import app

# Tests of the optimistic machinery: transactions overlap in one thread or across processes.
pytestmark = pytest.mark.usefixtures("optimistic")


@pytest.mark.timeout(60)
def test_recover_releases_a_killed_holder_and_reports_it(db_path):
    conn = sqlite_concurrent.connect(db_path)
    conn.execute("CREATE TABLE a(id INTEGER PRIMARY KEY, v INTEGER)")
    conn.execute("CREATE TABLE b(id INTEGER PRIMARY KEY, v INTEGER)")
    conn.execute("INSERT INTO a VALUES (1, 0)")
    conn.execute("INSERT INTO b VALUES (1, 0)")
    conn.commit()
    conn.close()
    start, queue, ready = SPAWN.Event(), SPAWN.Queue(), SPAWN.Event()
    child = SPAWN.Process(target=hold_locks_until_killed, args=(start, queue, db_path, ready))
    child.start()
    start.set()
    assert ready.wait(30)
    locks = stock_apsw(db_path + "-locks")
    txns = [
        t for (t,) in locks.execute("SELECT txn_id FROM transactions WHERE pid=?", (child.pid,))
    ]
    assert len(txns) == 2
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)

    result = CliRunner().invoke(app, ["recover", db_path, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report == [
        {
            "pid": child.pid,
            "locks_released": 2,
            "committed": [],
            "discarded": sorted(txns),
            "journal": "none",  # it never asked to commit, so it never wrote one
            "journal_detail": "",
        }
    ]
    assert locks.execute("SELECT count(*) FROM locks").fetchone() == (0,)
    assert locks.execute("SELECT count(*) FROM holders WHERE pid=?", (child.pid,)).fetchone() == (
        0,
    )
    locks.close()
    again = CliRunner().invoke(app, ["recover", db_path])
    assert again.exit_code == 0 and "nothing to recover" in again.output


def test_recover_bad_input_is_one_line(tmp_path):
    result = CliRunner().invoke(app, ["recover", str(tmp_path / "missing.db")])
    assert result.exit_code == 2
    assert "does not exist" in result.output
