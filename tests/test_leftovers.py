"""What stays beside a database: nothing once every process has closed it (or exited without
closing), as after the stdlib's last close; what does stay is explained by check and status."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SPAWN, lock_rows, stock_apsw, wait_until
from leftover_workers import die_holding, hold_open, race_last_close
from typer.testing import CliRunner

import sqlite_concurrent
from sqlite_concurrent.cli import check, status
from sqlite_concurrent.cli.app import app
from sqlite_concurrent.engine import recovery
from sqlite_concurrent.locking import oslock
from sqlite_concurrent.process import leftovers

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("optimistic")]

# The child commits while the test holds the merge lock, so its transaction waits in its journal
# (group commit); then it leaves a transaction open and ends as the test says.
CHILD = """
import gc, sys
import sqlite_concurrent

path, ending = sys.argv[1], sys.argv[2]
conn = sqlite_concurrent.connect(path, group_commit=True, row_lock_delay=0)
conn.execute("INSERT INTO t VALUES (1)")
conn.commit()
conn.execute("UPDATE t SET x = 2 WHERE x = 1")
print("ready", flush=True)
sys.stdin.readline()
if ending == "uncaught exception":
    raise RuntimeError("the application fails")
if ending == "dropped unclosed":
    del conn
    gc.collect()
"""


def _beside(path: str) -> list[str]:
    directory, name = os.path.split(path)
    return sorted(f for f in os.listdir(directory) if f.startswith(name))


def _make(path: str) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t(x)")
    conn.commit()
    conn.close()


@pytest.mark.parametrize("ending", ["end of script", "uncaught exception", "dropped unclosed"])
def test_a_process_that_exits_without_close_leaves_no_holder_row_and_no_journal(db_path, ending):
    _make(db_path)
    keeper = sqlite_concurrent.connect(db_path)  # keeps the lock database while the child exits
    merge_lock = oslock.ByteLock(db_path + "-locks", oslock.MERGE)
    merge_lock.acquire()
    try:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, db_path, ending],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        wait_until(
            lambda: (
                lock_rows(db_path, "SELECT count(*) FROM transactions WHERE state = 'ready'")
                == [(1,)]
            ),
            "the child's commit waits in its journal",
        )
    finally:
        merge_lock.release()
    try:
        assert child.stdout.readline() == "ready\n"
        pid = (child.pid,)
        assert os.path.exists(f"{db_path}-journal{child.pid}")
        assert lock_rows(db_path, "SELECT count(*) FROM holders WHERE pid = ?", pid) == [(1,)]
        assert lock_rows(db_path, "SELECT count(*) FROM transactions WHERE pid = ?", pid) == [(1,)]
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.wait(60) == (1 if ending == "uncaught exception" else 0)

        assert lock_rows(db_path, "SELECT count(*) FROM holders WHERE pid = ?", pid) == [(0,)]
        assert lock_rows(db_path, "SELECT count(*) FROM transactions WHERE pid = ?", pid) == [(0,)]
        assert lock_rows(db_path, "SELECT count(*) FROM locks") == [(0,)]
        assert not os.path.exists(f"{db_path}-journal{child.pid}")
        assert keeper.execute("SELECT x FROM t").fetchall() == [(1,)]  # rolled back
    finally:
        child.kill()
        child.wait()
        keeper.close()


def _two_processes_then_close(module, path: str, child_first: bool) -> list[str]:
    opened, release = SPAWN.Event(), SPAWN.Event()
    child = SPAWN.Process(target=hold_open, args=(module.__name__, path, opened, release))
    child.start()
    try:
        assert opened.wait(60)
        conn = module.connect(path, isolation_level=None)
        conn.execute("INSERT INTO t VALUES (0)")
        if child_first:
            release.set()
            child.join(60)
            conn.close()
        else:
            conn.close()
            release.set()
            child.join(60)
        assert child.exitcode == 0
    finally:
        release.set()
        child.join(60)
    return _beside(path)


@pytest.mark.parametrize("child_first", [True, False])
def test_the_last_close_leaves_only_the_database_as_the_stdlib_does(tmp_path, child_first):
    found = {}
    for module in (sqlite3, sqlite_concurrent):
        path = str(tmp_path / f"{module.__name__}.db")
        _make(path)
        found[module] = [
            f.replace(module.__name__, "app")
            for f in _two_processes_then_close(module, path, child_first)
        ]
    assert found[sqlite_concurrent] == found[sqlite3] == ["app.db"]
    conn = stock_apsw(str(tmp_path / "sqlite_concurrent.db"))
    assert len(conn.execute("SELECT x FROM t").fetchall()) == 2
    conn.close()


def test_a_deleted_database_leaves_nothing_once_closed(tmp_path):
    """Django's test runner deletes its test database; the stdlib then leaves -wal and -shm
    (and a database created again at the path would read that WAL)."""
    path = str(tmp_path / "app.db")
    _make(path)
    opened, release = SPAWN.Event(), SPAWN.Event()
    child = SPAWN.Process(target=hold_open, args=("sqlite_concurrent", path, opened, release))
    child.start()
    try:
        assert opened.wait(60)
        conn = sqlite_concurrent.connect(path)
        conn.execute("INSERT INTO t VALUES (0)")
        conn.commit()
        os.remove(path)
        conn.close()
        release.set()
        child.join(60)
        assert child.exitcode == 0
    finally:
        release.set()
        child.join(60)
    assert _beside(path) == []

    # One process alone, the same.
    _make(path)
    conn = sqlite_concurrent.connect(path)
    conn.execute("INSERT INTO t VALUES (0)")
    conn.commit()
    os.remove(path)
    conn.close()
    assert _beside(path) == []


def test_an_opener_racing_the_last_close_never_loses_a_lock_or_a_commit(db_path):
    _make(db_path)
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE c(id INTEGER PRIMARY KEY, n INTEGER)")
    conn.execute("INSERT INTO c VALUES (1, 0)")
    conn.commit()
    conn.close()
    rounds, increments = 40, 3
    barrier, closing, queue = SPAWN.Barrier(2, timeout=60), SPAWN.Event(), SPAWN.Queue()
    procs = [
        SPAWN.Process(
            target=race_last_close,
            args=(db_path, me, rounds, increments, barrier, closing, queue),
        )
        for me in ("A", "B")
    ]
    for p in procs:
        p.start()
    results = {
        me: (commits, seen, errors)
        for me, commits, seen, errors in [queue.get(timeout=110) for _ in procs]
    }
    for p in procs:
        p.join(30)
    assert results["A"][2] == [] and results["B"][2] == [], results
    assert [p.exitcode for p in procs] == [0, 0]
    # Open together, both held the same lock file, every round.
    a_seen = [s for s in results["A"][1] if s[0] != "after close"]
    assert a_seen == results["B"][1]
    # Every round ended with both closed and the lock database removed, and started afresh.
    assert [s for s in results["A"][1] if s[0] == "after close"] == [
        ("after close", False)
    ] * rounds
    commits = results["A"][0] + results["B"][0]
    assert commits == rounds * (2 * increments + 1)
    conn = stock_apsw(db_path)
    assert conn.execute("SELECT n FROM c").fetchall() == [(commits,)]
    conn.close()
    assert _beside(db_path) == ["app.db"]


def test_old_quarantined_files_are_deleted_on_recover_and_open(db_path):
    _make(db_path)
    now = int(time.time())
    old = now - (leftovers.QUARANTINE_DAYS + 1) * 86400
    recent = [now - i for i in range(leftovers.QUARANTINE_KEEP + 2)]
    for when in [old, *recent]:
        with open(f"{db_path}-journal{when % 100000}.quarantined-{when}", "wb") as f:
            f.write(b"x")
    recovery.recover(db_path)
    kept = [f for f in _beside(db_path) if ".quarantined-" in f]
    assert sorted(int(f.rsplit("-", 1)[1]) for f in kept) == sorted(
        recent[: leftovers.QUARANTINE_KEEP]
    )

    with open(f"{db_path}-journal1.quarantined-{old}", "wb") as f:
        f.write(b"x")
    sqlite_concurrent.connect(db_path).close()
    assert f"app.db-journal1.quarantined-{old}" not in _beside(db_path)
    assert len([f for f in _beside(db_path) if ".quarantined-" in f]) == leftovers.QUARANTINE_KEEP


def test_check_and_status_explain_what_is_left_and_why(db_path):
    _make(db_path)
    opened, die = SPAWN.Event(), SPAWN.Event()
    child = SPAWN.Process(target=die_holding, args=(db_path, opened, die))
    child.start()
    try:
        assert opened.wait(60)
        live = {f.name: f for f in status.read(db_path).files}
        assert live["app.db-locks"].live and live["app.db-wal"].live
    finally:
        die.set()
        child.join(60)
    assert child.exitcode == -signal.SIGKILL

    view = status.read(db_path)
    files = {f.name: f for f in view.files}
    for name in ("app.db-wal", "app.db-shm", "app.db-locks", "app.db-locks-wal"):
        assert not files[name].live
        assert "exited without closing" in files[name].why
    assert view.to_json()["files"] == [
        {"name": f.name, "live": f.live, "why": f.why} for f in view.files
    ]
    assert any(n.startswith("Not in use: ") for n in view.notes())
    shown = CliRunner().invoke(app, ["status", db_path])
    assert shown.exit_code == 0 and "files beside the database" in shown.output
    findings = {f.name: f for f in check.run(Path(db_path), 5.0)}
    assert findings["files beside"].outcome == check.WARN
    assert "app.db-locks: the lock database, left by a process" in findings["files beside"].detail

    # The next open reaps the dead process; its last close leaves the database alone.
    sqlite_concurrent.connect(db_path).close()
    assert _beside(db_path) == ["app.db"]
    findings = {f.name: f for f in check.run(Path(db_path), 5.0)}
    assert findings["files beside"] == check.Finding(
        "files beside", check.OK, "none: the database is one file"
    )
