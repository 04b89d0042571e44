"""Connections and fork(): what gunicorn --preload, Celery's prefork pool, Django's parallel test
runner and multiprocessing's fork context do.

SQLite forbids carrying a connection across fork() (https://sqlite.org/howtocorrupt.html, 2.6):
in the child an inherited connection refuses to work, closes (or is collected) quietly without
touching anything its parent relies on, and the child's own new connections work.  Every test
forks for real; parent and child step each other through pipes, and a child reports through a
pipe and its exit status.
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
import signal
import sqlite3
import sys
import traceback
import warnings

import pytest
from conftest import SPAWN, integrity_ok, stock_apsw, wait_until

import sqlite_concurrent
from sqlite_concurrent.storage import journal

pytestmark = pytest.mark.timeout(90)

FORK = multiprocessing.get_context("fork")


def _fork(child, *pipes):
    """Run ``child(*ends)`` in a forked child, where ``ends`` are the child's ends of ``pipes``
    (each a (read, write) pair: the child gets the read end of the first half, see
    ``_pipe_pair``).  Returns (pid, read end of its report)."""
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        signal.alarm(60)  # a stuck child must not outlive the test
        code = 1
        try:
            os.close(report_r)
            result = child(*pipes)
            os.write(report_w, json.dumps(result).encode())
            code = 0
        except BaseException:
            os.write(report_w, traceback.format_exc().encode())
        finally:
            os._exit(code)
    os.close(report_w)
    return pid, report_r


def _report(pid, report_r):
    with os.fdopen(report_r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, data.decode()
    return json.loads(data)


def _signal(fd):
    os.write(fd, b"x")


def _await(fd):
    assert os.read(fd, 1) == b"x", "the other side went away"


def _fresh_process_rows(path, sql):
    """What a process that never had the database open sees."""
    from workers import read_rows

    start, queue = SPAWN.Event(), SPAWN.Queue()
    proc = SPAWN.Process(target=read_rows, args=(start, queue, path, sql))
    proc.start()
    start.set()
    rows = queue.get(timeout=60)
    proc.join(60)
    return [tuple(r) for r in rows]


def _kernel_locks(pid, *paths):
    """This process's POSIX locks on ``paths`` as /proc/locks lists them."""
    inodes = {os.stat(p).st_ino: os.path.basename(p) for p in paths}
    found = []
    with open("/proc/locks") as f:
        for line in f:
            fields = line.split()
            if fields[1] == "->":  # a waiter
                continue
            if fields[1] != "POSIX" or int(fields[4]) != pid:
                continue
            inode = int(fields[5].split(":")[2])
            if inode in inodes:
                found.append((inodes[inode], fields[3], fields[6], fields[7]))
    return sorted(found)


def _table(path, rows=3, **kwargs):
    conn = sqlite_concurrent.connect(path, **kwargs)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, who TEXT)")
    conn.executemany("INSERT INTO t VALUES (?, 'parent')", [(i,) for i in range(rows)])
    conn.commit()
    return conn


def test_an_inherited_connection_refuses_to_work_in_the_child(db_path):
    conn = _table(db_path)
    cursor = conn.execute("SELECT id FROM t")

    def child():
        uses = {
            "execute": lambda: conn.execute("SELECT count(*) FROM t"),
            "cursor.execute": lambda: cursor.execute("SELECT 1"),
            "fetch": lambda: cursor.fetchall(),
            "commit": conn.commit,
            "cursor": conn.cursor,
            "in_transaction": lambda: conn.in_transaction,
        }
        seen = {}
        for name, use in uses.items():
            try:
                use()
                seen[name] = "worked"
            except Exception as e:
                message = str(e)
                stdlib = isinstance(e, sqlite3.ProgrammingError)
                seen[name] = [type(e).__name__, stdlib, "fork()" in message]
                seen[name].append(str(os.getppid()) in message)
        conn.close()  # quiet
        return seen

    seen = _report(*_fork(child))
    assert seen == {name: ["ProgrammingError", True, True, True] for name in seen}
    conn.execute("INSERT INTO t VALUES (10, 'parent')")
    conn.commit()
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (4,)
    conn.close()


def test_the_child_closing_an_inherited_connection_leaves_the_parent_undisturbed(db_path):
    conn = _table(db_path)
    conn.execute("BEGIN")  # a pinned snapshot: read marks in -shm the parent relies on
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (3,)
    conn.execute("INSERT INTO t VALUES (3, 'parent')")
    files = (db_path, db_path + "-shm", db_path + "-locks")
    locks_before = _kernel_locks(os.getpid(), *files)
    assert locks_before, "the parent holds POSIX locks on its database"
    journal_path = journal.path_for(os.path.abspath(db_path), os.getpid())
    journal_before = os.path.exists(journal_path)

    cursor = conn.cursor()

    def child():
        cursor.close()  # as quiet as the connection's
        conn.close()
        gc.collect()
        return "closed"

    assert _report(*_fork(child)) == "closed"
    assert _kernel_locks(os.getpid(), *files) == locks_before
    assert os.path.exists(journal_path) == journal_before
    locks = stock_apsw(db_path + "-locks")
    assert locks.execute("SELECT pid FROM holders").fetchall() == [(os.getpid(),)]
    locks.close()
    conn.commit()
    for i in range(4, 10):
        conn.execute("INSERT INTO t VALUES (?, 'parent')", (i,))
        conn.commit()
    assert _fresh_process_rows(db_path, "SELECT id FROM t ORDER BY id") == [(i,) for i in range(10)]
    conn.close()
    assert integrity_ok(db_path)


def test_a_child_opens_its_own_connection_and_commits_beside_the_parent(db_path):
    conn = _table(db_path, rows=1)
    opened_r, opened_w = os.pipe()
    go_r, go_w = os.pipe()

    def child():
        own = sqlite_concurrent.connect(db_path, timeout=60)
        own.execute("SELECT count(*) FROM t").fetchone()
        # Its own locks, in the kernel: not the inherited connections' bookkeeping.
        mine = _kernel_locks(os.getpid(), db_path, db_path + "-shm")
        _signal(opened_w)
        _await(go_r)
        for i in range(100, 120):
            own.execute("INSERT INTO t VALUES (?, 'child')", (i,))
            own.commit()
        own.close()
        return [list(lock) for lock in mine]

    pid, report = _fork(child)
    _await(opened_r)
    _signal(go_w)
    for i in range(1, 21):
        conn.execute("INSERT INTO t VALUES (?, 'parent')", (i,))
        conn.commit()
    child_locks = _report(pid, report)
    assert {lock[0] for lock in child_locks} == {"app.db", "app.db-shm"}
    expected = [(i, "parent") for i in range(21)] + [(i, "child") for i in range(100, 120)]
    assert conn.execute("SELECT id, who FROM t ORDER BY id").fetchall() == expected
    conn.close()
    assert _fresh_process_rows(db_path, "SELECT id, who FROM t ORDER BY id") == expected
    assert integrity_ok(db_path)


def test_an_inherited_connection_collected_in_the_child_is_quiet(db_path):
    state = {"conn": _table(db_path)}
    state["cursor"] = state["conn"].execute("SELECT id FROM t")

    def child():
        unraisable = []
        sys.unraisablehook = lambda hook_args: unraisable.append(repr(hook_args.exc_value))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            state.clear()
            gc.collect()
        own = sqlite_concurrent.connect(db_path)
        count = own.execute("SELECT count(*) FROM t").fetchone()[0]
        own.close()
        return [[str(w.message) for w in caught], unraisable, count]

    assert _report(*_fork(child)) == [[], [], 3]
    conn = sqlite_concurrent.connect(db_path)
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (3,)
    conn.close()


_inherited_by_workers: list = []


def _worker(path, first, close_inherited):
    if close_inherited:
        _inherited_by_workers[0].close()
    own = sqlite_concurrent.connect(path, timeout=60)
    for i in range(first, first + 10):
        own.execute("INSERT INTO t VALUES (?, 'worker')", (i,))
        own.commit()
    own.close()


def test_multiprocessing_fork_workers_open_their_own_connections(db_path):
    _inherited_by_workers.append(_table(db_path, rows=1))
    try:
        workers = [
            FORK.Process(target=_worker, args=(db_path, 100 * (k + 1), k == 0)) for k in range(2)
        ]
        for w in workers:
            w.start()
        conn = _inherited_by_workers[0]
        for i in range(1, 11):
            conn.execute("INSERT INTO t VALUES (?, 'parent')", (i,))
            conn.commit()
        for w in workers:
            w.join(60)
            assert w.exitcode == 0
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (31,)
        conn.close()
    finally:
        _inherited_by_workers.clear()
    assert _fresh_process_rows(db_path, "SELECT count(*) FROM t") == [(31,)]


def test_forked_inside_an_optimistic_transaction(db_path):
    """``with conn:`` around a fork: the child's own connection works; the parent commits.
    (A direct transaction is a write transaction on a stock connection, which a child forked
    inside it cannot trust: see test_forked_inside_an_exclusive_transaction.)"""
    conn = _table(db_path, mode="optimistic")
    conn.execute("BEGIN")
    conn.execute("INSERT INTO t VALUES (50, 'parent')")

    def child():
        own = sqlite_concurrent.connect(db_path)
        own.execute("INSERT INTO t VALUES (60, 'child')")
        own.commit()
        own.close()
        return "committed"

    assert _report(*_fork(child)) == "committed"
    conn.commit()
    assert _fresh_process_rows(db_path, "SELECT id FROM t WHERE id >= 50 ORDER BY id") == [
        (50,),
        (60,),
    ]
    conn.close()


@pytest.mark.parametrize("way", ["exclusive", "direct"])
def test_forked_inside_an_exclusive_transaction(db_path, tmp_path, way):
    """The parent holds the merge lock and a write transaction on the database when it forks
    (an exclusive transaction, or a direct one).  The child cannot close what it inherited
    without rewriting the parent's WAL index, so it refuses to open that database (clearly)
    and opens others; the parent commits."""
    conn = _table(db_path, mode="direct" if way == "direct" else "optimistic")
    conn.execute("BEGIN")
    if way == "exclusive":
        conn.execute("CREATE TABLE u(x)")  # exclusive: the merger in BEGIN IMMEDIATE
    conn.execute("INSERT INTO t VALUES (70, 'parent')")
    assert dict(+conn.ways) == {("direct" if way == "direct" else "optimistic"): 2}
    other_path = str(tmp_path / "other.db")

    def child():
        try:
            sqlite_concurrent.connect(db_path)
            refused = None
        except sqlite_concurrent.OperationalError as e:
            refused = ["fork" in str(e), str(os.getppid()) in str(e)]
        other = sqlite_concurrent.connect(other_path)
        other.execute("CREATE TABLE v(x)")
        other.execute("INSERT INTO v VALUES (1)")
        other.commit()
        other.close()
        return refused

    assert _report(*_fork(child)) == [True, True]
    conn.commit()
    conn.close()
    assert _fresh_process_rows(db_path, "SELECT who FROM t WHERE id = 70") == [("parent",)]
    assert _fresh_process_rows(other_path, "SELECT x FROM v") == [(1,)]
    assert integrity_ok(db_path)


def test_a_parent_killed_holding_the_merge_lock_does_not_leave_it_to_its_child(db_path):
    """The merge lock is an open-file-description lock: it lives as long as any descriptor
    on that description, and a forked child has copies.  The child closes them at once, so a
    parent that dies holding the lock releases it though its child lives on."""
    _table(db_path).close()
    from workers import fork_holding_merge_lock

    queue = SPAWN.Queue()
    parent = SPAWN.Process(target=fork_holding_merge_lock, args=(queue, db_path))
    parent.start()
    child_pid = None
    try:
        child_pid = queue.get(timeout=60)
        os.kill(parent.pid, signal.SIGKILL)
        # Not join(): the child holds a copy of the descriptor join() waits on.
        wait_until(lambda: _dead(parent.pid), "the parent is dead")
        assert not _dead(child_pid), "the child lives on"
        writer = FORK.Process(target=_write_one_row, args=(db_path,))
        writer.start()
        writer.join(45)
        alive = writer.is_alive()
        if alive:
            writer.kill()
        assert not alive, "the merge lock stayed held by the dead parent's child"
        assert writer.exitcode == 0
    finally:
        if child_pid is not None:
            os.kill(child_pid, signal.SIGKILL)
        parent.join(60)
    assert _fresh_process_rows(db_path, "SELECT who FROM t WHERE id = 77") == [("after",)]


def _dead(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def _write_one_row(path):
    conn = sqlite_concurrent.connect(path, timeout=30)
    conn.execute("INSERT INTO t VALUES (77, 'after')")
    conn.commit()
    conn.close()


def test_a_child_waits_for_its_parents_table_lock(db_path):
    """The child's transactions are its own: one of its connections waits for a lock its
    parent's open transaction holds (the thread ids of the two may be equal, and a thread never
    waits for itself)."""
    conn = _table(db_path)
    conn.close()
    conn = sqlite_concurrent.connect(db_path, lock_level="table", mode="optimistic")
    conn.execute("BEGIN")
    conn.execute("UPDATE t SET who = 'parent, again' WHERE id = 0")  # t locked X

    def child():
        own = sqlite_concurrent.connect(db_path, lock_level="table", timeout=60)
        own.execute("UPDATE t SET who = 'child' WHERE id = 1")
        own.commit()
        own.close()
        return "committed"

    pid, report = _fork(child)
    locks = stock_apsw(db_path + "-locks")
    waiting = (
        "SELECT count(*) FROM waiters JOIN transactions USING (txn_id) WHERE transactions.pid = ?"
    )
    wait_until(
        lambda: locks.execute(waiting, (pid,)).fetchone()[0] > 0 or _dead(pid),
        "the child waits for the parent's lock (or has given up)",
    )
    locks.close()
    conn.commit()
    assert _report(pid, report) == "committed"
    assert conn.execute("SELECT who FROM t WHERE id < 2 ORDER BY id").fetchall() == [
        ("parent, again",),
        ("child",),
    ]
    conn.close()
