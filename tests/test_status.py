"""``sqlite-concurrent status``: real processes holding and waiting for a table lock, shown as
JSON and as tables, and proof that looking changes nothing.

The test process never opens a ``sqlite_concurrent`` connection: the holder and the waiter are
spawned children.  It reads the lock database only through APSW, read-only, like ``status``
itself (two SQLite libraries in one process cannot see each other's POSIX locks).
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import re
import signal
import sqlite3
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw
import pytest
from typer.testing import CliRunner

from sqlite_concurrent.cli import status
from sqlite_concurrent.cli.app import app
from sqlite_concurrent.locking import oslock
from sqlite_concurrent.locking.lockdb import LockDB

SPAWN = multiprocessing.get_context("spawn")
ROOT = Path(__file__).resolve().parent.parent
# Wide enough that rich never folds a pid or a resource name across lines.
runner = CliRunner(env={"COLUMNS": "200"})
TABLES = ("holders", "transactions", "locks", "waiters", "table_versions", "meta")


@pytest.fixture(scope="module", autouse=True)
def _optimistic() -> Iterator[None]:
    """The children's transactions hold and wait for table locks: optimistic ones."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SQLITE_CONCURRENT_MODE", "optimistic")
        yield


# -- children ------------------------------------------------------------------------------------


def _hold_table(db: str, ready: Any, release: Any, results: Any) -> None:
    """Hold ``table:t`` X in an open transaction until released, then roll back."""
    import sqlite_concurrent

    conn = sqlite_concurrent.connect(db, lock_level="table", isolation_level=None)
    conn.execute("BEGIN")
    conn.execute("UPDATE t SET v = v + 1 WHERE id = 1")
    ready.set()
    released = release.wait(120)
    conn.execute("ROLLBACK")
    conn.close()
    results.put(("holder", "rolled back" if released else "never released"))


def _wait_for_table(db: str, ready: Any, results: Any) -> None:
    """Queue for ``table:t`` behind the holder; commit once it rolls back."""
    import sqlite_concurrent

    conn = sqlite_concurrent.connect(db, 120, lock_level="table", isolation_level=None)
    conn.execute("BEGIN")
    ready.set()
    try:
        conn.execute("UPDATE t SET v = v + 1 WHERE id = 2")
        conn.execute("COMMIT")
        results.put(("waiter", "committed"))
    except Exception as e:  # reported to the test, which fails on it
        results.put(("waiter", f"{type(e).__name__}: {e}"))
    finally:
        conn.close()


def _die_holding_table(db: str) -> None:
    """Take ``table:t`` X and die without releasing anything (SIGKILL: no cleanup runs)."""
    import sqlite_concurrent

    conn = sqlite_concurrent.connect(db, lock_level="table", isolation_level=None)
    conn.execute("BEGIN")
    conn.execute("UPDATE t SET v = v + 1 WHERE id = 1")
    os.kill(os.getpid(), signal.SIGKILL)


def _open_and_close(db: str) -> None:
    import sqlite_concurrent

    conn = sqlite_concurrent.connect(db, lock_level="table", isolation_level=None)
    conn.execute("UPDATE t SET v = v + 1 WHERE id = 1")
    conn.close()


# -- helpers -------------------------------------------------------------------------------------


def _make_db(path: Path) -> str:
    # The stdlib's SQLite, closed before any child opens the file with APSW.
    conn = sqlite3.connect(path)
    conn.executescript(
        "PRAGMA journal_mode=WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, v INT);"
        "INSERT INTO t VALUES (1, 0), (2, 0);"
    )
    conn.close()
    return str(path)


def _read_only(path: str) -> apsw.Connection:
    uri = f"file:{urllib.parse.quote(path)}?mode=ro"
    return apsw.Connection(uri, flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)


def _rows(db: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the lock database's tables, read-only."""
    conn = _read_only(db + "-locks")
    try:
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall()) for t in TABLES}
    finally:
        conn.close()


def _files(db: str) -> dict[str, bytes]:
    """The lock database and its WAL, byte for byte (``-shm`` holds readers' marks: skipped)."""
    return {
        name: Path(db + name).read_bytes()
        for name in ("-locks", "-locks-wal")
        if Path(db + name).exists()
    }


def _until_queued(db: str, deadline_s: float = 60) -> None:
    """Return once the lock database has a waiter.  Waiting polls the table: there is no
    kernel event for "a row was inserted", and the condition, not the pause, decides."""
    give_up = time.monotonic() + deadline_s
    while time.monotonic() < give_up:
        conn = _read_only(db + "-locks")
        try:
            if conn.execute("SELECT count(*) FROM waiters").fetchone()[0]:
                return
        finally:
            conn.close()
        time.sleep(0.005)
    pytest.fail(f"no waiter was queued within {deadline_s} s")


def _status_json(db: str, *extra: str) -> dict[str, Any]:
    result = runner.invoke(app, ["status", db, "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@dataclass
class Scene:
    db: str
    holder_pid: int
    waiter_pid: int


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    """One child holds ``table:t`` X inside a transaction; a second waits for it, queued."""
    db = _make_db(tmp_path_factory.mktemp("status") / "app.db")
    held, queued, release = SPAWN.Event(), SPAWN.Event(), SPAWN.Event()
    results = SPAWN.Queue()
    holder = SPAWN.Process(target=_hold_table, args=(db, held, release, results))
    waiter = SPAWN.Process(target=_wait_for_table, args=(db, queued, results))
    holder.start()
    try:
        assert held.wait(60), "the holder never took its lock"
        waiter.start()
        assert queued.wait(60), "the waiter never began its transaction"
        _until_queued(db)
        assert holder.pid is not None and waiter.pid is not None
        yield Scene(db, holder.pid, waiter.pid)
        release.set()
        outcomes = dict(results.get(timeout=60) for _ in range(2))
        # Looking did not disturb them: the holder let go, the waiter got the lock.
        assert outcomes == {"holder": "rolled back", "waiter": "committed"}
    finally:
        release.set()
        for p in (holder, waiter):
            if p.pid is not None:
                p.join(60)
                if p.is_alive():
                    p.kill()
                    p.join()


# -- a holder and a waiter -----------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_json_shows_the_holder_both_transactions_the_lock_and_the_waiter(scene: Scene) -> None:
    before_rows, before_files = _rows(scene.db), _files(scene.db)
    data = _status_json(scene.db)

    assert data["format"] == 1 and data["lock_database_exists"] is True
    assert data["database"] == os.path.abspath(scene.db)
    assert data["lock_database"] == os.path.abspath(scene.db) + "-locks"
    assert data["schema_version"] == 3
    assert data["old_after_s"] == 60
    assert data["wal"]["exists"] and data["wal"]["bytes"] == os.path.getsize(scene.db + "-wal")

    holders = {h["pid"]: h for h in data["holders"]}
    assert set(holders) == {scene.holder_pid, scene.waiter_pid}
    for h in holders.values():
        assert h["alive"] is True and h["start_time"] > 0 and h["registered_age_s"] >= 0
        assert h["started_at"] <= h["registered_at"] <= data["taken_at"]

    txns = {t["pid"]: t for t in data["transactions"]}
    assert set(txns) == {scene.holder_pid, scene.waiter_pid}
    held, waiting = txns[scene.holder_pid], txns[scene.waiter_pid]
    for t in (held, waiting):
        assert t["lock_level"] == "table" and t["state"] == "active" and t["alive"] is True
        assert 0 <= t["age_s"] < 60 and t["old"] is False
    assert held["txn_id"] < waiting["txn_id"]  # ids grow: the holder began first

    table_lock = [lock for lock in data["locks"] if lock["resource"] == "table:t"]
    assert len(table_lock) == 1
    assert table_lock[0]["mode"] == "X"
    assert table_lock[0]["txn_id"] == held["txn_id"] and table_lock[0]["pid"] == scene.holder_pid
    assert all(lock["txn_id"] == held["txn_id"] for lock in data["locks"])

    [waiter] = data["waiters"]
    assert waiter["txn_id"] == waiting["txn_id"] and waiter["pid"] == scene.waiter_pid
    assert waiter["resource"] == "table:t" and waiter["mode"] == "X"
    assert waiter["position"] == 1 and waiter["blocked_by"] == [held["txn_id"]]
    assert 0 <= waiter["waiting_s"] <= waiting["age_s"]

    assert data["old_transactions"] == [] and data["notes"] == []
    # Read-only: not a row and not a byte of the lock database or its WAL changed.
    assert _rows(scene.db) == before_rows
    assert _files(scene.db) == before_files


@pytest.mark.timeout(120)
def test_tables_name_the_holder_the_lock_and_the_waiter(scene: Scene) -> None:
    before_rows, before_files = _rows(scene.db), _files(scene.db)
    data = _status_json(scene.db)
    held, waiting = sorted(data["transactions"], key=lambda t: t["txn_id"])

    result = runner.invoke(app, ["status", scene.db])
    assert result.exit_code == 0, result.output
    out = result.output
    for title in ("holders", "transactions", "locks", "waiters (queue order)"):
        assert re.search(rf"^{re.escape(title)}\s*$", out, re.M), f"no {title} table:\n{out}"
    assert f"{scene.db}-locks" in out and "WAL of app.db:" in out
    lines = out.splitlines()

    def row(*cells: str) -> str:
        found = [
            line for line in lines if all(re.search(rf"\b{re.escape(c)}\b", line) for c in cells)
        ]
        assert found, f"no line with {cells}:\n{out}"
        return found[0]

    row(str(scene.holder_pid), "alive")
    row(str(scene.waiter_pid), "alive")
    row(str(held["txn_id"]), str(scene.holder_pid), "table", "active")
    row(str(waiting["txn_id"]), str(scene.waiter_pid), "table", "active")
    row("table:t", "X", str(held["txn_id"]), str(scene.holder_pid))
    waiter_line = row("table:t", "X", str(waiting["txn_id"]), str(scene.waiter_pid))
    assert waiter_line.rstrip(" │").endswith(str(held["txn_id"]))  # blocked by the holder
    assert "old (pins the WAL)" not in out and "old transaction" not in out
    assert _rows(scene.db) == before_rows
    assert _files(scene.db) == before_files


@pytest.mark.timeout(120)
def test_old_after_zero_flags_both_transactions_as_old(scene: Scene) -> None:
    before_rows, before_files = _rows(scene.db), _files(scene.db)
    data = _status_json(scene.db, "--old-after", "0")
    ids = sorted(t["txn_id"] for t in data["transactions"])
    assert data["old_after_s"] == 0
    assert all(t["old"] for t in data["transactions"])
    assert data["old_transactions"] == ids
    [note] = data["notes"]
    assert note.startswith("2 old transactions") and "WAL cannot be reset" in note

    result = runner.invoke(app, ["status", scene.db, "--old-after", "0"])
    assert result.exit_code == 0, result.output
    assert result.output.count("old (pins the WAL)") == 2
    assert "2 old transactions" in result.output and "WAL cannot be reset" in result.output

    # A generous limit flags nothing.
    assert _status_json(scene.db, "--old-after", "3600")["old_transactions"] == []
    assert _rows(scene.db) == before_rows
    assert _files(scene.db) == before_files


# -- dead holders, quiet lock databases, no lock database ----------------------------------------


@pytest.mark.timeout(60)
def test_a_dead_holder_is_shown_dead_and_not_reaped(tmp_path: Path) -> None:
    db = _make_db(tmp_path / "dead.db")
    child = SPAWN.Process(target=_die_holding_table, args=(db,))
    child.start()
    child.join(50)
    assert child.exitcode == -signal.SIGKILL
    before_rows, before_files = _rows(db), _files(db)

    data = _status_json(db)
    [holder] = data["holders"]
    [txn] = data["transactions"]
    assert holder["pid"] == txn["pid"] == child.pid
    assert holder["alive"] is False and txn["alive"] is False
    assert [(lk["resource"], lk["mode"]) for lk in data["locks"]] == [("table:t", "X")]
    assert any(f"Dead processes (pid {child.pid})" in n for n in data["notes"])
    result = runner.invoke(app, ["status", db])
    assert result.exit_code == 0 and "dead" in result.output

    # A lock manager would have reaped it; status must not.
    assert _rows(db) == before_rows
    assert _files(db) == before_files


@pytest.mark.timeout(60)
def test_a_quiet_lock_database_is_read_without_creating_files(tmp_path: Path) -> None:
    db = _make_db(tmp_path / "quiet.db")
    # Present as a process of ours is (without a connection): the child's close is then not the
    # last, so it leaves the lock database in place, checkpointed.
    oslock.present(db + "-locks")
    try:
        child = SPAWN.Process(target=_open_and_close, args=(db,))
        child.start()
        child.join(50)
    finally:
        oslock.forget(db + "-locks")
    assert child.exitcode == 0
    before = sorted(os.listdir(tmp_path))
    assert "quiet.db-locks" in before and "quiet.db-locks-wal" not in before
    contents = _files(db)

    data = _status_json(db)
    assert data["lock_database_exists"] and data["schema_version"] == 3
    assert data["holders"] == data["transactions"] == data["locks"] == data["waiters"] == []
    result = runner.invoke(app, ["status", db])
    assert result.exit_code == 0 and "holders: none" in result.output
    assert sorted(os.listdir(tmp_path)) == before  # no -locks-wal or -locks-shm left behind
    assert _files(db) == contents


@pytest.mark.timeout(30)
def test_no_lock_database_means_no_activity_yet(tmp_path: Path) -> None:
    db = _make_db(tmp_path / "fresh.db")
    result = runner.invoke(app, ["status", db])
    assert result.exit_code == 0, result.output
    assert "No sqlite-concurrent process has this database open" in result.output
    data = _status_json(db)
    assert data["lock_database_exists"] is False and data["schema_version"] is None
    assert data["holders"] == data["transactions"] == data["locks"] == data["waiters"] == []
    assert "No sqlite-concurrent process has this database open" in data["notes"][0]
    assert not Path(db + "-locks").exists()


@pytest.mark.timeout(30)
def test_queues_and_many_locks_from_a_lock_database_written_directly(tmp_path: Path) -> None:
    """Rows written straight into a lock database (no processes behind them): who blocks whom
    for table and row resources, queue positions, and the cap on locks shown in the tables."""
    db = _make_db(tmp_path / "many.db")
    lock_db = LockDB(db)  # creates the schema; this process is the only one using it
    try:
        with lock_db.writing() as c:
            c.execute(
                "INSERT INTO holders VALUES (?, ?, 0, 'test')", (os.getpid(), lock_db.start_time)
            )
            for txn in (1, 2, 3, 4):
                c.execute(
                    "INSERT INTO transactions(txn_id, pid, lock_level, state, began_at) "
                    "VALUES (?, ?, 'row', 'active', 0)",
                    (txn, os.getpid()),
                )
            c.executemany(
                "INSERT INTO locks VALUES (?, 1, 'X', 0)", [(f"row:u:{k}",) for k in range(150)]
            )
            c.execute("INSERT INTO locks VALUES ('table:v', 4, 'S', 0)")
            c.executemany(
                "INSERT INTO waiters(txn_id, resource, mode, since) VALUES (?, ?, ?, 0)",
                [
                    (2, "table:u", "X"),
                    (3, "row:u:7", "X"),
                    (4, "table:u", "S"),
                    (3, "table:v", "S"),
                ],
            )
    finally:
        lock_db.close()
    before_rows, before_files = _rows(db), _files(db)

    data = _status_json(db)
    assert len(data["locks"]) == 151
    waiters = [
        (w["txn_id"], w["resource"], w["position"], w["blocked_by"]) for w in data["waiters"]
    ]
    assert waiters == [
        (2, "table:u", 1, [1]),  # txn 1 holds rows of u
        (3, "row:u:7", 1, [1]),  # ... and that row
        (4, "table:u", 2, [1, 2]),  # and txn 2 is ahead in the queue
        (3, "table:v", 1, []),  # S next to S: nothing blocks it (about to be granted)
    ]
    result = runner.invoke(app, ["status", db])
    assert result.exit_code == 0, result.output
    assert "first 100 of 151 locks; --json has all" in result.output
    assert result.output.count("row:u:") == 100 + 1  # the shown locks, and txn 3's wait
    assert _rows(db) == before_rows
    assert _files(db) == before_files


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_bad_input_is_a_one_line_error(tmp_path: Path) -> None:
    db = _make_db(tmp_path / "app.db")
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n")
    cases = [
        (["status", str(tmp_path / "missing.db")], "does not exist"),
        (["status", str(tmp_path)], "is a directory"),
        (["status", str(text)], "is not a SQLite database"),
        (["status", db, "--old-after", "-1"], "--old-after must be zero or more"),
        (["status", db, "--old-after", "inf"], "--old-after must be zero or more"),
        (["status", db, "--old-after", "soon"], "Invalid value"),
    ]
    for args, message in cases:
        _assert_one_line_error(runner.invoke(app, args), message)

    locks = Path(db + "-locks")
    locks.write_text("garbage, not a lock database\n" * 100)
    _assert_one_line_error(runner.invoke(app, ["status", db]), "-locks is not a SQLite database")
    assert not Path(db + "-locks-wal").exists() and not Path(db + "-locks-shm").exists()
    locks.unlink()
    other = sqlite3.connect(locks)  # a SQLite database, but not ours
    other.execute("CREATE TABLE x (y)")
    other.close()
    _assert_one_line_error(
        runner.invoke(app, ["status", db, "--json"]), "-locks is not a sqlite-concurrent lock"
    )


def _assert_one_line_error(result: Any, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    if message == "Invalid value":  # typer's own usage error, on stderr with a usage line
        assert message in result.stderr
        return
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0]
    assert result.stdout == ""


# -- the documented JSON shape -------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_docs_document_the_json_shape(tmp_path: Path) -> None:
    reference = (ROOT / "docs" / "cli.md").read_text()
    section = reference[reference.index("## `sqlite-concurrent status DB`") :]
    documented = json.loads(re.search(r"```json\n(.*?)```", section, re.S).group(1))
    db = _make_db(tmp_path / "doc.db")
    child = SPAWN.Process(target=_die_holding_table, args=(db,))
    child.start()
    child.join(50)
    actual = _status_json(db)

    def shape(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: shape(v) for k, v in value.items()}
        if isinstance(value, list):
            return [shape(value[0])] if value and isinstance(value[0], dict) else "list"
        return "value"

    documented_shape, actual_shape = shape(documented), shape(actual)
    # No waiter here (the scene tests have one): compare its keys with the dataclass instead.
    assert actual_shape.pop("waiters") == "list"
    [waiter] = documented_shape.pop("waiters")
    assert set(waiter) == {f.name for f in dataclasses.fields(status.Waiter)}
    assert documented_shape == actual_shape


def _hold_direct(db: str, ready: Any, release: Any) -> None:
    """An open direct transaction (it holds the merge lock, and nothing in the lock database
    until it has been open a moment)."""
    import sqlite_concurrent

    conn = sqlite_concurrent.connect(db, mode="direct")
    conn.execute("UPDATE t SET v = v + 1 WHERE id = 1")
    ready.set()
    release.wait(120)
    conn.rollback()
    conn.close()


@pytest.mark.timeout(120)
def test_a_long_direct_transaction_is_shown(tmp_path: Path) -> None:
    db = _make_db(tmp_path / "app.db")
    ready, release = SPAWN.Event(), SPAWN.Event()
    holder = SPAWN.Process(target=_hold_direct, args=(db, ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        deadline = time.monotonic() + 60
        while not [t for t in _status_json(db)["transactions"] if t["state"] == "direct"]:
            assert time.monotonic() < deadline, "the direct transaction was never shown"
            time.sleep(0.01)
        [shown] = _status_json(db)["transactions"]
        assert shown["pid"] == holder.pid and shown["lock_level"] == "row"
        assert shown["alive"] is True
    finally:
        release.set()
        holder.join(60)
    assert holder.exitcode == 0
    assert _status_json(db)["transactions"] == []
