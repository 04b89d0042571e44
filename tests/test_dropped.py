"""A connection the application drops without closing, as the stdlib's: let go of.

The stdlib closes a connection when its last reference goes.  Ours records it then and lets go
of what it held at the next ``connect()`` (``process/exiting.py``), so a process that opens a
connection per request and never closes one keeps a bounded number of descriptors, and the files
beside the database go with its last connection.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(120)

_REQUESTS = """
import gc, json, os, sys, warnings
warnings.simplefilter("ignore")
if sys.argv[1] == "ours":
    import sqlite_concurrent as sqlite3
else:
    import sqlite3
path = sys.argv[2]

def request(i):
    conn = sqlite3.connect(path)
    if sqlite3.__name__ == "sqlite3":
        conn.execute("PRAGMA journal_mode=WAL")  # as ours always is
    conn.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v)")
    with conn:
        conn.execute("INSERT INTO t(v) VALUES (?)", (i,))
    return conn.execute("SELECT count(*) FROM t").fetchone()[0]

counts, fds = [], {}
for i in range(60):
    counts.append(request(i))
    if i in (9, 59):
        fds[i] = len(os.listdir("/proc/self/fd"))
growth = fds[59] - fds[9]
gc.collect()  # the stdlib's connection is in a reference cycle: collected only by the collector
sqlite3.connect(":memory:").close()  # another connect, after the last one was dropped
files = sorted(os.listdir(os.path.dirname(path)))
print(json.dumps({"counts": counts, "growth": growth, "files": files}))
"""


def _requests(which: str, directory) -> dict:
    os.makedirs(directory)
    done = subprocess.run(
        [sys.executable, "-c", _REQUESTS, which, str(directory / "app.db")],
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_connections_dropped_unclosed_are_let_go_as_the_stdlibs_are(tmp_path):
    stdlib = _requests("stdlib", tmp_path / "stdlib")
    ours = _requests("ours", tmp_path / "ours")
    assert stdlib["counts"] == list(range(1, 61))
    assert ours["counts"] == stdlib["counts"]
    # Fifty more connections, none closed: not one descriptor more than after the first ten,
    # without the collector (the stdlib's wait for it: its growth depends on when it runs).
    assert ours["growth"] <= 0, (ours["growth"], stdlib["growth"])
    # The last one dropped: nothing beside the database, as after the stdlib's last close.
    assert stdlib["files"] == ["app.db"]
    assert ours["files"] == stdlib["files"]


_WRITE = """
import sys
import sqlite_concurrent
conn = sqlite_concurrent.connect(sys.argv[1], timeout=30)
with conn:
    conn.execute("INSERT INTO t(v) VALUES ('another process')")
with conn:
    conn.execute("DELETE FROM t WHERE v = 'another process'")
"""

_INSIDE = """
import subprocess, sys, warnings
warnings.simplefilter("ignore")
import sqlite_concurrent
path, mode, write = sys.argv[1:4]
conn = sqlite_concurrent.connect(path, mode=mode)
conn.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v)")
conn.commit()
conn.execute("INSERT INTO t(v) VALUES ('dropped')")  # the transaction stays open
del conn
other = sqlite_concurrent.connect(path)  # the safe point: the dropped one is closed
with other:
    other.execute("INSERT INTO t(v) VALUES ('other')")
subprocess.run([sys.executable, "-c", write, path], check=True, timeout=60)
print(other.execute("SELECT v FROM t ORDER BY id").fetchall())
"""


@pytest.mark.parametrize("mode", ["optimistic", "direct"])
def test_a_connection_dropped_inside_a_transaction_is_rolled_back_at_the_next_connect(
    db_path, mode
):
    """It keeps itself alive when dropped, and the next ``connect()`` closes it as ``close()``
    would: nothing of its transaction is committed, and its locks (the merge lock, for a direct
    one) hold up nobody, in this process or another."""
    done = subprocess.run(
        [sys.executable, "-c", _INSIDE, db_path, mode, _WRITE],
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[('other',)]"


_EVERY_WAY = """
import gc, sys, warnings, weakref
warnings.simplefilter("ignore")
import sqlite_concurrent
gc.disable()  # only reference counting frees what follows: no cycle may hold it
conn = sqlite_concurrent.connect(sys.argv[1])
conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
conn.execute("INSERT INTO t(v) VALUES (1)")  # implicit BEGIN: a direct transaction
conn.commit()
conn.execute("BEGIN")
conn.execute("SELECT * FROM t").fetchall()  # read first: optimistic
conn.execute("INSERT INTO t(v) VALUES (2)")
conn.commit()
conn.execute("CREATE TEMP TABLE m(x)")  # a statement of its own kind, on the merger
parts = [conn] + [value for value in vars(conn).values() if hasattr(value, "_owner")]
refs = [weakref.ref(part) for part in parts]
del conn, parts
print([type(r()).__name__ for r in refs if r() is not None])
"""


def test_a_dropped_connection_and_what_it_owns_are_freed_at_once(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", _EVERY_WAY, str(tmp_path / "app.db")],
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
