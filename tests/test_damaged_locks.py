"""A lock database ``-locks`` that is garbage, truncated or another application's SQLite
database: moved aside and replaced when no live process uses it (on open and by
``sqlite-concurrent recover``), refused with an error naming it while one does, and never
written into."""

from __future__ import annotations

import glob
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest

import sqlite_concurrent

KINDS = ["garbage", "truncated", "foreign"]
CLI = [sys.executable, "-m", "sqlite_concurrent"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}


def make_db(path: str) -> None:
    """A database, closed, with the lock database it had while open left beside it (the last
    close removes it: a copy taken while it was in use is put back, as a crash would leave it)."""
    conn = sqlite_concurrent.connect(path)
    conn.execute("CREATE TABLE t(x)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    locks = apsw.Connection(path + "-locks", flags=apsw.SQLITE_OPEN_READONLY)
    try:
        locks.execute("VACUUM INTO ?", (path + "-locks.copy",))
    finally:
        locks.close()
    conn.close()
    os.replace(path + "-locks.copy", path + "-locks")


def foreign_db(path: str) -> None:
    """Another application's database, in WAL mode, with a row in it."""
    conn = apsw.Connection(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE users(name TEXT); INSERT INTO users VALUES ('ada')")
    conn.close()


def damage(db_path: str, kind: str) -> bytes:
    """Damage the lock database in place (its inode stays); return its new content."""
    locks = db_path + "-locks"
    if kind == "garbage":
        size = os.path.getsize(locks)
        with open(locks, "r+b") as f:
            f.write(os.urandom(size))
    elif kind == "truncated":
        # Page 1 survives, the tables' root pages (1 KiB pages) do not.
        os.truncate(locks, 3 * 1024)
    else:
        foreign_db(locks + ".new")
        os.replace(locks + ".new", locks)
    return Path(locks).read_bytes()


def quarantined(db_path: str) -> list[str]:
    return sorted(glob.glob(glob.escape(db_path) + "-locks.quarantined-*[0-9]Z"))


def users(path: str) -> list[tuple[str, ...]]:
    conn = apsw.Connection(f"file:{path}?mode=ro", flags=apsw.SQLITE_OPEN_URI | 1)
    try:
        tables = [n for (n,) in conn.execute("SELECT name FROM sqlite_schema")]
        assert tables == ["users"], tables  # nothing of ours was written into it
        return list(conn.execute("SELECT name FROM users"))
    finally:
        conn.close()


def rows(db_path: str) -> list[tuple[int, ...]]:
    conn = sqlite_concurrent.connect(db_path)
    try:
        conn.execute("INSERT INTO t VALUES (2)")
        conn.commit()
        return conn.execute("SELECT x FROM t ORDER BY x").fetchall()
    finally:
        conn.close()


# -- no live process: moved aside --------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_unused_damaged_lock_database_is_moved_aside_on_open(
    db_path: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    make_db(db_path)
    content = damage(db_path, kind)
    with caplog.at_level(logging.WARNING, logger="sqlite_concurrent"):
        assert rows(db_path) == [(1,), (2,)]
    (moved,) = quarantined(db_path)
    assert Path(moved).read_bytes() == content or kind == "foreign"
    warning = [r.getMessage() for r in caplog.records if "moved to" in r.getMessage()]
    assert len(warning) == 1 and db_path + "-locks " in warning[0] and moved in warning[0]
    if kind == "foreign":
        assert users(moved) == [("ada",)]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_recover_moves_an_unused_damaged_lock_database_aside(db_path: str, kind: str) -> None:
    make_db(db_path)
    damage(db_path, kind)
    check = subprocess.run([*CLI, "check", db_path], capture_output=True, text=True, env=ENV)
    assert check.returncode == 1, check.stdout + check.stderr
    assert "-locks" in check.stdout and "recover" in check.stdout, check.stdout
    proc = subprocess.run([*CLI, "recover", db_path], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (moved,) = quarantined(db_path)
    assert f"{db_path}-locks:" in proc.stderr and moved in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert rows(db_path) == [(1,), (2,)]
    assert quarantined(db_path) == [moved]


# -- a live process has it open: refused, untouched --------------------------------------------

_HOLD_OURS = """
import sys, sqlite_concurrent
conn = sqlite_concurrent.connect(sys.argv[1])
conn.execute("SELECT * FROM t").fetchall()
print("open", flush=True)
sys.stdin.read()
"""

_HOLD_FOREIGN = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
conn.execute("SELECT * FROM users").fetchall()
print("open", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def held(db_path: str, request: pytest.FixtureRequest) -> Iterator[subprocess.Popen[str]]:
    """A damaged lock database that a live child process has open: ours with a connection
    to the database that opened it before the damage, or the other application's own."""
    kind = request.param
    make_db(db_path)
    if kind == "foreign":
        damage(db_path, kind)
    args = [_HOLD_FOREIGN, db_path + "-locks"] if kind == "foreign" else [_HOLD_OURS, db_path]
    child = subprocess.Popen(
        [sys.executable, "-c", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "open\n"
        if kind != "foreign":
            # Everything into the main file, so the damage is what a reader sees.
            conn = apsw.Connection(db_path + "-locks")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.close()
            damage(db_path, kind)
        yield child
    finally:
        if child.poll() is None:
            child.communicate("", timeout=30)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("held", KINDS, indirect=True)
def test_damaged_lock_database_in_use_is_refused_and_left_alone(
    db_path: str, held: subprocess.Popen[str], request: pytest.FixtureRequest
) -> None:
    locks = db_path + "-locks"
    before = Path(locks).read_bytes()
    with pytest.raises(sqlite_concurrent.OperationalError) as caught:
        sqlite_concurrent.connect(db_path)
    message = str(caught.value)
    assert locks in message and "still has it open" in message and "recover" in message
    proc = subprocess.run([*CLI, "recover", db_path], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert locks in proc.stderr
    assert Path(locks).read_bytes() == before
    assert quarantined(db_path) == []
    # Once it has gone, the next open works: a process of ours, the last to close, removed the
    # lock database; the other application's is moved aside.
    held.communicate("", timeout=30)
    assert rows(db_path) == [(1,), (2,)]
    foreign = request.node.callspec.params["held"] == "foreign"
    assert len(quarantined(db_path)) == (1 if foreign else 0)


@pytest.mark.timeout(60)
def test_quarantine_never_replaces_an_existing_file(db_path: str) -> None:
    make_db(db_path)
    damage(db_path, "garbage")
    # Every name the quarantine could pick this second and the next is taken.
    taken = []
    for t in {time.time(), time.time() + 1}:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(t))
        path = f"{db_path}-locks.quarantined-{stamp}"
        Path(path).write_bytes(b"keep")
        taken.append(path)
    assert rows(db_path) == [(1,), (2,)]
    for path in taken:
        assert Path(path).read_bytes() == b"keep"
    assert len(glob.glob(glob.escape(db_path) + "-locks.quarantined-*")) == len(taken) + 1
