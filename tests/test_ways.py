"""Each transaction runs the cheapest safe way: direct, optimistic or escalated (ways.py).

The multi-process tests run code written for the stdlib, unmodified and without a retry loop,
through the stdlib and through us, and require the same outcome: no more errors, and the same
final state.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import (
    SPAWN,
    hold_in_child,
    in_thread,
    lock_rows,
    merge_lock_awaited,
    run_workers,
    stock_apsw,
    wait_until,
)
from stdlib_steps import same_as_stdlib
from way_workers import counter, order_with_lines, transact_counter, write_then_read_back
from workers import stock_write_under_our_merge

import sqlite_concurrent
from sqlite_concurrent import ConflictError, OperationalError, ProgrammingError
from sqlite_concurrent.engine import ways

WRITERS, COUNT = 4, 150


def _schema(path: str) -> None:
    conn = sqlite3.connect(path)  # stock: this process never opens it with ours
    conn.executescript(
        """
        PRAGMA journal_mode = WAL;
        CREATE TABLE c (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);
        INSERT INTO c VALUES (1, 0);
        CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT NOT NULL);
        CREATE TABLE lines (order_id INTEGER NOT NULL REFERENCES orders(id), item INTEGER);
        CREATE TABLE log (id INTEGER PRIMARY KEY, who INTEGER);
        """
    )
    conn.close()


def _state(path: str) -> dict:
    conn = stock_apsw(path)
    try:
        return {
            "n": conn.execute("SELECT n FROM c").fetchone()[0],
            "orders": conn.execute("SELECT count(*) FROM orders").fetchone()[0],
            "lines": conn.execute("SELECT count(*) FROM lines").fetchone()[0],
            # Every line points at an order, three per order.
            "orphans": conn.execute(
                "SELECT count(*) FROM lines WHERE order_id NOT IN (SELECT id FROM orders)"
            ).fetchone()[0],
            "short": conn.execute(
                "SELECT count(*) FROM (SELECT order_id FROM lines GROUP BY order_id "
                "HAVING count(*) <> 3)"
            ).fetchone()[0],
            "log": conn.execute("SELECT count(*) FROM log").fetchone()[0],
        }
    finally:
        conn.close()


def _outcome(
    tmp_path, name: str, module: str, worker, count: int = COUNT, think: float = 0
) -> tuple[dict, dict]:
    path = str(tmp_path / f"{name}-{module}.db")
    _schema(path)
    results = run_workers(
        worker, [(path, module, me, count, think) for me in range(WRITERS)], timeout=240
    )
    errors: dict[str, int] = {}
    for result in results:
        assert isinstance(result, dict), result
        for cls, n in result.items():
            errors[cls] = errors.get(cls, 0) + n
    return errors, _state(path)


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    "worker", [counter, order_with_lines, write_then_read_back], ids=lambda w: w.__name__
)
def test_unmodified_code_gets_what_the_stdlib_gets(tmp_path, worker):
    stdlib_errors, stdlib_state = _outcome(tmp_path, worker.__name__, "sqlite3", worker)
    our_errors, our_state = _outcome(tmp_path, worker.__name__, "sqlite_concurrent", worker)
    assert stdlib_errors == {}, "the stdlib itself failed: the comparison means nothing"
    assert our_errors == stdlib_errors
    assert our_state == stdlib_state


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    "worker", [counter, order_with_lines, write_then_read_back], ids=lambda w: w.__name__
)
def test_long_transactions_get_what_the_stdlib_gets(tmp_path, worker):
    """The same code with 3 ms of work in each transaction: the bodies are long, so they
    run optimistically.  The counter observes nothing, and a conflicting one is run again at
    commit; the others look at something after writing, and go on directly from there."""
    outcomes = [
        _outcome(tmp_path, worker.__name__, module, worker, count=40, think=0.003)
        for module in ("sqlite3", "sqlite_concurrent")
    ]
    assert outcomes[0][0] == {}, "the stdlib itself failed: the comparison means nothing"
    assert outcomes[1] == outcomes[0]


@pytest.mark.timeout(300)
def test_long_and_short_transactions_on_one_hot_row(tmp_path):
    """Long (2 ms of work) and short transactions on the same row: everything commits, the
    count is exact, nobody needs more than 10 attempts, the short ones run directly and the
    long ones start optimistically."""
    path = str(tmp_path / "mixed.db")
    _schema(path)
    args = [(path, me, 60, 0.002 if me % 2 else 0, "auto") for me in range(4)]
    results = run_workers(transact_counter, args, timeout=240)
    for result in results:
        assert isinstance(result, dict), result
        assert result["most_attempts"] <= 10
    assert _state(path)["n"] == 240 and _state(path)["log"] == 240
    short = [r["ways"] for r in results if r["me"] % 2 == 0]
    long = [r["ways"] for r in results if r["me"] % 2]
    assert all(w == {"direct": 60} for w in short), short
    # Long: optimistic at first (and some of those replayed at commit, or escalated); a shape
    # that conflicts more often than not, or reaches the hot row after a conflict, goes on
    # directly.
    began_optimistic = ("optimistic", "replayed", "escalated")
    assert all(
        sum(w.get(way, 0) for way in began_optimistic) > 0 and sum(w.values()) >= 60 for w in long
    ), long


def test_mode_is_checked(db_path):
    with pytest.raises(ProgrammingError, match="mode must be one of auto, optimistic, direct"):
        sqlite_concurrent.connect(db_path, mode="fast")


@pytest.mark.parametrize("mode", ["auto", "direct", "optimistic"])
def test_each_mode_commits_and_rolls_back_like_the_stdlib(db_path, mode):
    conn = sqlite_concurrent.connect(db_path, mode=mode)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("INSERT INTO t(v) VALUES ('a')")
    assert conn.in_transaction
    conn.commit()
    conn.execute("BEGIN")
    assert conn.in_transaction  # before any statement, as in the stdlib
    conn.execute("INSERT INTO t(v) VALUES ('b')")
    conn.execute("SAVEPOINT s")
    conn.execute("INSERT INTO t(v) VALUES ('c')")
    conn.execute("ROLLBACK TO s")
    conn.execute("RELEASE s")
    conn.rollback()
    conn.execute("BEGIN")
    conn.commit()  # nothing ran: nothing to commit, no error
    assert not conn.in_transaction
    with conn:
        cur = conn.execute("INSERT INTO t(v) VALUES ('d')")
        assert cur.lastrowid == 2
    assert conn.execute("SELECT id, v FROM t ORDER BY id").fetchall() == [(1, "a"), (2, "d")]
    # Optimistic: the empty BEGIN-COMMIT began one too (the choice waits for no statement).
    expected = {"direct": 3} if mode != "optimistic" else {"optimistic": 4}
    assert dict(+conn.ways) == expected
    conn.close()


def test_direct_transactions_write_nothing_to_the_lock_database(db_path):
    """Not even an id: the lock database's header would change with each write, and every
    other process's next direct transaction would read it again instead of one ``pread``."""
    conn = sqlite_concurrent.connect(db_path)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)")
    conn.execute("INSERT INTO t VALUES (1, 0)")
    conn.commit()
    sequence = "SELECT seq FROM sqlite_sequence WHERE name = 'transactions'"
    before = lock_rows(db_path, sequence)
    for _ in range(200):  # past the 64 ids a process reserves at a time
        with conn:
            conn.execute("UPDATE t SET v = v + 1")
    assert lock_rows(db_path, sequence) == before
    assert conn.ways["direct"] == 201
    assert conn.execute("SELECT v FROM t").fetchone() == (200,)
    conn.close()


def test_a_wait_for_the_merge_lock_is_not_part_of_the_body(db_path):
    """A direct transaction's body begins once it has the merge lock: a short shape whose
    transactions each slept milliseconds behind another process's stays direct (counted as
    waiting, the third such wait would move it to the optimistic path)."""
    _schema(db_path)
    conn = sqlite_concurrent.connect(db_path, check_same_thread=False)
    update = "UPDATE c SET n = n + 1 WHERE id = 1"

    def one() -> None:
        with conn:
            conn.execute(update)

    one()
    for _ in range(4):
        holder, queue, proceed = hold_in_child(
            db_path, ["INSERT INTO log (who) VALUES (0)"], mode="direct"
        )
        began = time.monotonic()
        thread, done, outcome = in_thread(one)
        wait_until(lambda: merge_lock_awaited(db_path), "the writer sleeps for the merge lock")
        while time.monotonic() - began < 5 * ways.DIRECT_BELOW:  # a wait of 5 ms at least
            time.sleep(ways.DIRECT_BELOW)
        proceed.set()
        assert queue.get(timeout=60) == "committed"
        holder.join(60)
        assert done.wait(60) and outcome == [("ok", None)], outcome
        thread.join()
    assert dict(conn.ways) == {"direct": 5}
    assert conn.execute("SELECT n FROM c").fetchone() == (5,)
    conn.close()


def test_a_statement_run_again_directly_reports_what_the_stdlibs_does(tmp_path):
    """From its second run on, a direct transaction's DML runs by the short way for DML the
    merger ran before (``StatementRunner._run_plain_dml``): the same row counts, row ids,
    counters (triggers' rows included), and errors as the stdlib's, run after run."""
    counters = "SELECT changes(), total_changes(), last_insert_rowid()"
    steps = [
        "script:CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT UNIQUE, v INTEGER);"
        "CREATE TABLE audit (id INTEGER PRIMARY KEY, k TEXT);"
        "CREATE TRIGGER t_audit AFTER UPDATE ON t BEGIN INSERT INTO audit (k) VALUES (new.k); END;",
    ]
    for k in ("a", "b", "a", "c"):  # the second "a" breaks UNIQUE
        steps += [
            f"ids:INSERT INTO t (k, v) VALUES ('{k}', 1)",
            "ids:UPDATE t SET v = v + 1 WHERE k <= 'b'",
            counters,
            "commit",
            counters,
        ]
    steps += [
        "ids:DELETE FROM t WHERE v > 2",
        counters,
        "commit",
        "SELECT * FROM t",
        "SELECT * FROM audit",
    ]
    same_as_stdlib(tmp_path, steps)


def test_a_second_connection_of_the_thread_runs_optimistically(db_path):
    """A's direct transaction holds the merge lock: B, in the same thread, must not wait for
    it (it never ends); B runs optimistically, and its commit fails as the stdlib's would
    while A is open ("database is locked"), and succeeds once A has ended."""
    a = sqlite_concurrent.connect(db_path)
    a.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)")
    a.execute("INSERT INTO t VALUES (1, 0), (2, 0)")
    a.commit()
    b = sqlite_concurrent.connect(db_path)
    a.execute("UPDATE t SET v = 1 WHERE id = 1")
    b.execute("UPDATE t SET v = 2 WHERE id = 2")
    with pytest.raises(OperationalError, match="database is locked"):
        b.commit()
    assert b.in_transaction  # still open, as after the stdlib's failed COMMIT
    a.commit()
    b.commit()
    assert a.execute("SELECT v FROM t ORDER BY id").fetchall() == [(1,), (2,)]
    assert dict(+a.ways) == {"direct": 2} and dict(+b.ways) == {"optimistic": 1}


def test_forced_direct_in_a_thread_holding_the_lock_says_locked(db_path):
    a = sqlite_concurrent.connect(db_path)
    a.execute("CREATE TABLE t (v)")
    b = sqlite_concurrent.connect(db_path, mode="direct")
    a.execute("INSERT INTO t VALUES (1)")
    # Not the optimistic way: this thread's other transaction would have to end first.
    b.execute("INSERT INTO t VALUES (2)")
    assert dict(+b.ways) == {"optimistic": 1}
    a.commit()
    b.commit()


def _in_another_thread(fn):
    """Run ``fn`` in a thread of its own (a transaction of this thread's would keep it from
    running directly) and return what it returned."""
    thread, done, outcome = in_thread(fn)
    assert done.wait(60)
    thread.join()
    ((status, value),) = outcome
    if status == "error":
        raise value
    return value


def _committed_elsewhere(db_path: str, sql: str, **kwargs) -> dict:
    """Commit ``sql`` on a new connection in another thread: how it ran (``Connection.ways``)."""

    def commit():
        conn = sqlite_concurrent.connect(db_path, **kwargs)
        with conn:
            conn.execute(sql)
        ways = dict(+conn.ways)
        conn.close()
        return ways

    return _in_another_thread(commit)


def _doctors(path: str) -> None:
    """The write-skew example's table: two doctors, both on call."""
    setup = sqlite_concurrent.connect(path)
    setup.execute("CREATE TABLE doctors (name TEXT PRIMARY KEY, on_call INTEGER)")
    setup.execute("INSERT INTO doctors VALUES ('alice', 1), ('bob', 1)")
    setup.commit()
    setup.close()


@pytest.mark.parametrize("level", ["row", "page"])
@pytest.mark.parametrize(("begin", "way"), [("BEGIN IMMEDIATE", "direct"), ("BEGIN", "escalated")])
def test_write_skew_with_direct_and_optimistic_transactions(db_path, level, begin, way):
    """The doctors example: each checks that another is on call, then goes off call.  A
    direct transaction (or one that reads, then escalates at its first write) commits between
    an optimistic one's read and its commit: snapshot isolation (row) lets both through; page
    is serializable and refuses the second."""
    _doctors(db_path)
    slow = sqlite_concurrent.connect(db_path, lock_level=level, mode="optimistic")
    slow.execute("BEGIN")
    (on_call,) = slow.execute("SELECT count(*) FROM doctors WHERE on_call").fetchone()
    assert on_call == 2
    slow.execute("UPDATE doctors SET on_call = 0 WHERE name = 'alice'")

    def go_off_call_directly():
        fast = sqlite_concurrent.connect(db_path, lock_level=level, mode="direct")
        fast.execute(begin)
        (on_call,) = fast.execute("SELECT count(*) FROM doctors WHERE on_call").fetchone()
        fast.execute("UPDATE doctors SET on_call = 0 WHERE name = 'bob'")
        fast.commit()
        ways = dict(+fast.ways)
        fast.close()
        return on_call, ways

    assert _in_another_thread(go_off_call_directly) == (2, {way: 1})
    if level == "row":
        slow.commit()  # write skew: allowed by snapshot isolation
        on = 0
    else:
        with pytest.raises(ConflictError):
            slow.commit()
        on = 1
    check = sqlite_concurrent.connect(db_path)
    assert check.execute("SELECT count(*) FROM doctors WHERE on_call").fetchone() == (on,)


def test_no_direct_transaction_while_a_table_level_one_is_live(db_path):
    """Table-level locks cover tables the merger cannot report: while one is held, the
    others run optimistically, wait for it, and so stay serializable."""
    _doctors(db_path)
    slow = sqlite_concurrent.connect(db_path, lock_level="table", mode="optimistic")
    slow.execute("BEGIN")
    slow.execute("SELECT count(*) FROM doctors WHERE on_call").fetchone()
    slow.execute("UPDATE doctors SET on_call = 0 WHERE name = 'alice'")

    def go_off_call():
        fast = sqlite_concurrent.connect(db_path, lock_level="table", mode="direct")
        fast.execute("BEGIN")
        (on_call,) = fast.execute("SELECT count(*) FROM doctors WHERE on_call").fetchone()
        if on_call > 1:
            fast.execute("UPDATE doctors SET on_call = 0 WHERE name = 'bob'")
        fast.commit()
        ways = dict(+fast.ways)
        fast.close()
        return on_call, ways

    thread, done, outcome = in_thread(go_off_call)
    wait_until(
        lambda: lock_rows(db_path, "SELECT count(*) FROM waiters")[0][0] > 0,
        "the second transaction waits for the first one's table lock",
    )
    slow.commit()
    assert done.wait(60)
    thread.join()
    assert outcome == [("ok", (1, {"optimistic": 1}))]
    check = sqlite_concurrent.connect(db_path)
    assert check.execute("SELECT count(*) FROM doctors WHERE on_call").fetchone() == (1,)


@pytest.mark.timeout(120)
def test_a_table_level_transaction_begun_while_a_direct_one_runs_reads_what_it_commits(db_path):
    """A direct transaction asked whether table-level ones were live before it began; one
    that registers while it runs must not take its snapshot before the direct one commits:
    it would decide on the table as it was, and the write skew that the table level promises
    to prevent would commit."""
    _doctors(db_path)
    # Bob goes off call, directly (having seen alice on call).
    holder, queue, proceed = hold_in_child(
        db_path, ["UPDATE doctors SET on_call = 0 WHERE name = 'bob'"], mode="direct"
    )

    def once_registered():
        wait_until(
            lambda: (
                lock_rows(db_path, "SELECT count(*) FROM transactions WHERE lock_level = 'table'")[
                    0
                ][0]
                > 0
            ),
            "the table-level transaction registered",
        )
        proceed.set()

    thread, done, outcome = in_thread(once_registered)
    alice = sqlite_concurrent.connect(db_path, lock_level="table", mode="optimistic")
    alice.execute("BEGIN")
    (on_call,) = alice.execute("SELECT count(*) FROM doctors WHERE on_call").fetchone()
    if on_call > 1:
        alice.execute("UPDATE doctors SET on_call = 0 WHERE name = 'alice'")
    alice.commit()
    assert done.wait(60) and outcome == [("ok", None)], outcome
    thread.join()
    assert queue.get(timeout=60) == "committed"
    holder.join(60)
    assert on_call == 1
    assert alice.execute("SELECT count(*) FROM doctors WHERE on_call").fetchone() == (1,)
    alice.close()


@pytest.mark.timeout(120)
def test_an_escalation_finds_a_stock_commit_made_while_it_waited_for_the_write_lock(db_path):
    """A stock writer does not wait for our merge lock.  An escalating transaction asks
    whether what it read is still current once it holds the merge lock, then waits for the
    database's write lock, which the stock writer holds; it commits meanwhile.  Going on from
    the latest database, the transaction would read that commit after reading the state
    before it (no snapshot); asked again inside the write transaction, it conflicts."""
    setup = sqlite_concurrent.connect(db_path)
    setup.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)")
    setup.executemany("INSERT INTO t VALUES (?, 0)", [(1,), (2,)])
    setup.commit()
    setup.close()
    conn = sqlite_concurrent.connect(db_path, mode="direct")  # escalates at its first write
    conn.execute("BEGIN")
    (before,) = conn.execute("SELECT v FROM t WHERE id = 1").fetchone()
    start, queue, writing = SPAWN.Event(), SPAWN.Queue(), SPAWN.Event()
    stock_writer = SPAWN.Process(
        target=stock_write_under_our_merge,
        args=(start, queue, db_path, "UPDATE t SET v = 1 WHERE id = 1", writing),
    )
    stock_writer.start()
    start.set()
    assert writing.wait(60), "the stock writer never wrote"
    try:
        conn.execute("UPDATE t SET v = v + 1 WHERE id = 2")
    except ConflictError as e:
        assert e.kind == "page"
        conn.rollback()
    else:
        # The stock commit came before the transaction asked: it stayed optimistic, on its
        # snapshot.
        assert conn.execute("SELECT v FROM t WHERE id = 1").fetchone() == (before,)
        conn.rollback()
    assert queue.get(timeout=60) == "committed"
    stock_writer.join(60)
    conn.close()


@pytest.mark.parametrize("level", ["row", "page"])
def test_a_direct_commit_conflicts_an_optimistic_writer_of_the_same_row(db_path, level):
    setup = sqlite_concurrent.connect(db_path)
    setup.execute("CREATE TABLE c (id INTEGER PRIMARY KEY, n INTEGER)")
    setup.execute("INSERT INTO c VALUES (1, 0)")
    setup.commit()
    setup.close()
    slow = sqlite_concurrent.connect(db_path, lock_level=level, mode="optimistic")
    slow.execute("UPDATE c SET n = n + 1 WHERE id = 1")
    add_ten = "UPDATE c SET n = n + 10 WHERE id = 1"
    assert _committed_elsewhere(db_path, add_ten, lock_level=level, mode="direct") == {"direct": 1}
    with pytest.raises(ConflictError) as caught:
        slow.commit()
    assert caught.value.table == "c"
    assert slow.execute("SELECT n FROM c").fetchone() == (10,)


def test_a_conflict_makes_the_table_hot_and_the_retry_escalates(db_path):
    """After a conflict on ``c``, a transaction that reaches ``c`` goes on directly from that
    statement: its work so far is applied first, and it cannot conflict again."""
    setup = sqlite_concurrent.connect(db_path)
    setup.execute("CREATE TABLE c (id INTEGER PRIMARY KEY, n INTEGER)")
    setup.execute("CREATE TABLE log (who TEXT)")
    setup.execute("INSERT INTO c VALUES (1, 0)")
    setup.commit()
    setup.close()
    slow = sqlite_concurrent.connect(db_path)
    # Long bodies: the shape goes optimistic.
    for _ in range(8):
        with slow:
            slow.execute("INSERT INTO log VALUES ('slow')")
            time.sleep(0.003)
            slow.execute("UPDATE c SET n = n + 1 WHERE id = 1")
    assert slow.ways["optimistic"] >= 3 and slow.ways["escalated"] == 0, dict(slow.ways)
    fast = sqlite_concurrent.connect(db_path, mode="direct")

    def conflicting(conn):
        conn.execute("INSERT INTO log VALUES ('slow')")
        # Its result seen, it cannot be run again at commit instead of conflicting (under
        # transact, seeing it does not make it go on directly).
        assert conn.execute("UPDATE c SET n = n + 1 WHERE id = 1").rowcount == 1
        with fast:
            fast.execute("UPDATE c SET n = n + 100 WHERE id = 1")

    with pytest.raises(ConflictError):
        slow.transact(conflicting, retries=0)
    fast.close()
    before = slow.ways["escalated"]
    with slow:
        slow.execute("INSERT INTO log VALUES ('slow')")
        slow.execute("UPDATE c SET n = n + 1 WHERE id = 1")
    assert slow.ways["escalated"] == before + 1
    assert slow.execute("SELECT n FROM c").fetchone() == (109,)


INTEGRATIONS = Path(__file__).parent / "integrations"


def _orm_outcome(
    tmp_path, orm: str, driver: str, name: str, count: int, think: float
) -> tuple[dict, tuple]:
    """Set up, then run ``WRITERS`` ORM writer processes together; their errors and the
    final (counter, items) state."""
    database = str(tmp_path / f"{orm}-{name}.db")
    script = [sys.executable, str(INTEGRATIONS / "orm_writers.py"), orm, driver, database]
    subprocess.run([*script, "setup"], check=True, timeout=120)
    procs = [
        subprocess.Popen(
            [*script, "work", str(me), str(count), str(think)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for me in range(WRITERS)
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        errors: dict[str, int] = {}
        for p in procs:
            out, _ = p.communicate(timeout=240)
            assert p.returncode == 0
            got = json.loads(out.strip().splitlines()[-1])
            for cls, n in got["errors"].items():
                errors[cls] = errors.get(cls, 0) + n
            for message in got["messages"]:
                errors[message] = 0  # shown by a failed comparison
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    conn = stock_apsw(database)
    try:
        table = "contenttypes_counter" if orm == "django" else "counter"
        items = "contenttypes_item" if orm == "django" else "item"
        state = (
            conn.execute(f"SELECT n FROM {table}").fetchone()[0],
            conn.execute(f"SELECT count(*) FROM {items}").fetchone()[0],
        )
    finally:
        conn.close()
    return errors, state


ORM_COUNT = 100


@pytest.mark.timeout(900)
@pytest.mark.parametrize(("count", "think"), [(ORM_COUNT, 0), (30, 0.003)], ids=["short", "work"])
@pytest.mark.parametrize(
    ("orm", "stdlib", "ours"),
    [
        ("django", "django.db.backends.sqlite3", "sqlite_concurrent.django"),
        ("sqlalchemy", "sqlite", "sqlite+sqlite_concurrent"),
    ],
)
def test_orm_writers_get_what_the_stdlib_gets(tmp_path, orm, stdlib, ours, count, think):
    """Django ``atomic()`` with ``F()`` and ``create()``; SQLAlchemy ORM sessions that write,
    then read a shared row and write it back: 4 processes, no retry loop.  With 3 ms of work
    in each, the bodies are long: they start optimistically, and go on directly once the ORM
    looks at a result after writing (``rowcount``, a fetched row)."""
    pytest.importorskip(orm)
    stdlib_errors, stdlib_state = _orm_outcome(tmp_path, orm, stdlib, "stdlib", count, think)
    our_errors, our_state = _orm_outcome(tmp_path, orm, ours, "ours", count, think)
    assert stdlib_errors == {}, "the stdlib itself failed: the comparison means nothing"
    assert our_errors == stdlib_errors
    assert our_state == stdlib_state == (WRITERS * count, WRITERS * count)


def test_a_transaction_that_reads_first_blocks_no_writer(db_path):
    """As SQLite's deferred transaction: ``BEGIN`` and reads take no write lock, so a writer in
    another thread commits meanwhile; its first write then escalates only if what it read is
    still current, and otherwise stays optimistic (and conflicts only if it must)."""
    conn = sqlite_concurrent.connect(db_path)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)")
    conn.execute("INSERT INTO t VALUES (1, 0), (2, 0)")
    conn.commit()
    conn.execute("BEGIN")
    assert conn.execute("SELECT v FROM t WHERE id = 1").fetchone() == (0,)
    assert _committed_elsewhere(db_path, "UPDATE t SET v = 5 WHERE id = 2") == {"direct": 1}
    conn.execute("UPDATE t SET v = 1 WHERE id = 1")  # what it read changed page: no escalation
    conn.commit()
    assert dict(+conn.ways) == {"direct": 1, "optimistic": 1}
    assert conn.execute("SELECT v FROM t ORDER BY id").fetchall() == [(1,), (5,)]


def test_begin_immediate_runs_directly_from_its_first_read(db_path):
    conn = sqlite_concurrent.connect(db_path)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)")
    conn.execute("INSERT INTO t VALUES (1, 0)")
    conn.commit()
    conn.execute("BEGIN IMMEDIATE")
    (v,) = conn.execute("SELECT v FROM t WHERE id = 1").fetchone()
    conn.execute("UPDATE t SET v = ? WHERE id = 1", (v + 1,))
    conn.commit()
    assert dict(+conn.ways) == {"direct": 2}
