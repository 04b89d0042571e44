"""Worker processes for the multi-process tests (importable by spawned children)."""

from __future__ import annotations

import functools
import os
import random
import sqlite3
import time
import traceback

import sqlite_concurrent


def _report_errors(fn):
    @functools.wraps(fn)
    def wrapper(start, queue, *args):
        try:
            queue.put(fn(start, *args))
        except BaseException:
            queue.put(("error", traceback.format_exc()))
            raise

    return wrapper


@_report_errors
def disjoint_updates(start, path, writer, rows, txns, think):
    """Read then update this writer's own rows; returns (writer, intervals, commits)."""
    conn = sqlite_concurrent.connect(path)
    conn.execute("PRAGMA synchronous=NORMAL")
    intervals = []
    start.wait()
    for i in range(txns):
        row_id = writer * rows + (i % rows)
        t0 = time.monotonic()
        conn.execute("BEGIN")
        (value,) = conn.execute("SELECT v FROM t WHERE id=?", (row_id,)).fetchone()
        time.sleep(think)
        conn.execute("UPDATE t SET v=? WHERE id=?", (value + 1, row_id))
        t1 = time.monotonic()
        conn.commit()
        intervals.append((t0, t1))
    conn.close()
    return writer, intervals


@_report_errors
def counter_commits(start, path, row, commits):
    """One-row transactions back to back on ``row``, as stdlib code writes them (they run
    directly); returns (row, what this process's checkpointer did)."""
    conn = sqlite_concurrent.connect(path)
    conn.execute("PRAGMA synchronous=NORMAL")
    start.wait()
    for _ in range(commits):
        with conn:
            conn.execute("UPDATE t SET v = v + 1 WHERE id = ?", (row,))
    checkpointer = conn._db.checkpointer
    done = {
        "wal_bytes": os.stat(path + "-wal").st_size,  # before a last close deletes it
        "ways": dict(conn.ways),
        "passives": checkpointer.passives,
        "gate_closures": checkpointer.gate_closures,
        "restarts": checkpointer.restarts,
    }
    conn.close()
    return row, done


@_report_errors
def inserts_the_database_cannot_hold(start, path, rows):
    """Insert ``rows`` rows of a page each, a transaction each, while this process may not grow
    a file past the database's size plus 1 MiB: the WAL stays under that, but a checkpoint that
    copies the new pages into the database does not fit.  Returns what ``commit()`` raised and
    the warnings logged about checkpoints."""
    import logging
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails, not the process
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    warnings: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            warnings.append(record.getMessage())

    logging.getLogger("sqlite_concurrent").addHandler(Collect(logging.WARNING))
    conn = sqlite_concurrent.connect(path)
    conn.execute("PRAGMA synchronous=NORMAL")
    start.wait()
    resource.setrlimit(resource.RLIMIT_FSIZE, (os.stat(path).st_size + 2**20, hard))
    raised = []
    for _ in range(rows):
        try:
            with conn:
                conn.execute("INSERT INTO t(pad) VALUES (?)", ("y" * 3000,))
        except Exception as e:
            raised.append(repr(e))
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    conn.close()  # the last close copies the WAL into the database, with room now
    return raised, warnings


def _transfer(conn, a, b, amount):
    (bal,) = conn.execute("SELECT balance FROM accounts WHERE id=?", (a,)).fetchone()
    conn.execute("UPDATE accounts SET balance=? WHERE id=?", (bal - amount, a))
    conn.execute("UPDATE accounts SET balance=balance+? WHERE id=?", (amount, b))
    return amount


@_report_errors
def transfers(start, path, seed, count, accounts):
    rng = random.Random(seed)
    conn = sqlite_concurrent.connect(path)
    conn.execute("PRAGMA synchronous=NORMAL")
    start.wait()
    done = 0
    for _ in range(count):
        a, b = rng.sample(range(accounts), 2)
        conn.transact(_transfer, a, b, rng.randint(1, 50), retries=1000)
        done += 1
    conn.close()
    return done


@_report_errors
def timed_updates(start, path, writer, rows, stop, think, wal_limit):
    """Overlapping read-then-update transactions on this writer's rows until ``stop`` is set.

    Returns (writer, per-row commit counts, errors by class name, begin latencies).
    """
    conn = sqlite_concurrent.connect(path, wal_limit=wal_limit)
    conn.execute("PRAGMA synchronous=NORMAL")
    counts = [0] * rows
    errors: dict[str, int] = {}
    begins = []
    start.wait()
    i = 0
    while not stop.is_set():
        row = i % rows
        i += 1
        try:
            t0 = time.monotonic()
            conn.execute("BEGIN")
            begins.append(time.monotonic() - t0)
            (value,) = conn.execute("SELECT v FROM t WHERE id=?", (writer * rows + row,)).fetchone()
            time.sleep(think)
            conn.execute("UPDATE t SET v=? WHERE id=?", (value + 1, writer * rows + row))
            conn.commit()
            counts[row] += 1
        except sqlite_concurrent.Error as e:
            errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
            conn.rollback()
    conn.close()
    return writer, counts, errors, begins


def _go_off_call(conn, me, other, ready, proceed):
    (on_call,) = conn.execute("SELECT on_call FROM doctors WHERE id=?", (other,)).fetchone()
    ready.set()
    proceed.wait(30)
    if on_call:
        conn.execute("UPDATE doctors SET on_call=0 WHERE id=?", (me,))


@_report_errors
def doctor(start, path, level, me, other, ready, proceed):
    """Write skew: check the other doctor is on call, then go off call."""
    conn = sqlite_concurrent.connect(path, lock_level=level, timeout=20)
    start.wait()
    conn.execute("BEGIN")
    try:
        _go_off_call(conn, me, other, ready, proceed)
        conn.commit()
        return "committed"
    except sqlite_concurrent.ConflictError as e:
        conn.rollback()
        return type(e).__name__
    finally:
        conn.close()


@_report_errors
def lock_two_tables(start, path, first, second, mine_locked, other_locked):
    """Table level: lock ``first``, wait until the other process locked its first, then lock
    ``second``.  Returns (outcome, seconds spent in the second statement)."""
    conn = sqlite_concurrent.connect(path, lock_level="table", timeout=20)
    start.wait()
    conn.execute("BEGIN")
    conn.execute(f"UPDATE {first} SET v = v + 1")
    mine_locked.set()
    assert other_locked.wait(30)
    t0 = time.monotonic()
    try:
        conn.execute(f"UPDATE {second} SET v = v + 1")
        conn.commit()
        return "committed", time.monotonic() - t0
    except sqlite_concurrent.DeadlockError:
        return "deadlock", time.monotonic() - t0
    finally:
        conn.close()


@_report_errors
def hammer_table(start, path, writer, duration, think):
    """Table level: read-modify-write one shared counter row for ``duration`` seconds, with
    BEGIN IMMEDIATE (write locks from the first read, as in SQLite).
    Returns (writer, the counter values it wrote, in order): each value is a turn, so the gap
    between two of a writer's values is how many commits others made while it waited."""
    conn = sqlite_concurrent.connect(path, lock_level="table", timeout=30)
    conn.execute("PRAGMA synchronous=NORMAL")
    start.wait()
    turns = []
    end = time.monotonic() + duration
    while time.monotonic() < end:
        conn.execute("BEGIN IMMEDIATE")
        (v,) = conn.execute("SELECT v FROM counter WHERE id=0").fetchone()
        time.sleep(think)
        conn.execute("UPDATE counter SET v=? WHERE id=0", (v + 1,))
        conn.commit()
        turns.append(v + 1)
    conn.close()
    return writer, turns


@_report_errors
def hold_locks_until_killed(start, path, ready):
    """Takes a table lock (table level) in one connection and row locks (row level) in another,
    then blocks forever; the test SIGKILLs it."""
    table_conn = sqlite_concurrent.connect(path, lock_level="table")
    row_conn = sqlite_concurrent.connect(path, lock_level="row")
    start.wait()
    table_conn.execute("BEGIN")
    table_conn.execute("UPDATE a SET v = v + 1")
    row_conn.execute("BEGIN")
    row_conn.execute("UPDATE b SET v = v + 1 WHERE id = 1")
    wait_until_visible(path, "row:b:1")
    ready.set()
    threading_event = __import__("threading").Event()
    threading_event.wait()


@_report_errors
def update_after_kill(start, path, level, table, where, holder_ready):
    """Waits for the lock holder to be ready, then updates; returns seconds the update took."""
    conn = sqlite_concurrent.connect(path, lock_level=level, timeout=30)
    start.wait()
    assert holder_ready.wait(30)
    conn.execute("BEGIN")
    conn.execute(f"SELECT count(*) FROM {table}").fetchall()
    t0 = time.monotonic()
    conn.execute(f"UPDATE {table} SET v = v + 10 {where}")
    waited = time.monotonic() - t0
    conn.commit()
    conn.close()
    return waited


@_report_errors
def level_transfers(start, path, level, seed, count, accounts):
    rng = random.Random(seed)
    conn = sqlite_concurrent.connect(path, lock_level=level, timeout=60)
    conn.execute("PRAGMA synchronous=NORMAL")
    start.wait()
    for _ in range(count):
        a, b = rng.sample(range(accounts), 2)
        conn.transact(_transfer, a, b, rng.randint(1, 50), retries=10_000)
    conn.close()
    return count


@_report_errors
def ingest(start, path, writer, rows, think, autocommit):
    """Insert ``rows`` rows with auto-assigned ids; returns (writer, conflicts)."""
    conn = sqlite_concurrent.connect(path, isolation_level=None if autocommit else "")
    conn.execute("PRAGMA synchronous=NORMAL")
    conflicts = 0
    start.wait()
    for seq in range(rows):
        while True:
            try:
                if not autocommit:
                    conn.execute("BEGIN")
                conn.execute("INSERT INTO events(writer, seq) VALUES (?, ?)", (writer, seq))
                if think:
                    time.sleep(think)
                if not autocommit:
                    conn.commit()
                break
            except sqlite_concurrent.ConflictError:
                conflicts += 1
                conn.rollback()
    conn.close()
    return writer, conflicts


def _logged_transfer(conn, a, b, amount, transfer_id):
    (bal,) = conn.execute("SELECT balance FROM accounts WHERE id=?", (a,)).fetchone()
    conn.execute("UPDATE accounts SET balance=? WHERE id=?", (bal - amount, a))
    conn.execute("UPDATE accounts SET balance=balance+? WHERE id=?", (amount, b))
    conn.execute("INSERT INTO transfers(id, amount) VALUES (?, ?)", (transfer_id, amount))


def _acknowledged(conn, ack_log, seed, count, transfer):
    """Run ``transfer(conn, i, a, b, amount, transfer_id)`` ``count`` times (until a crash
    point kills this process), appending each transfer's id to ``ack_log`` once it has
    returned, that is once its commit was acknowledged."""
    rng = random.Random(seed)
    fd = os.open(ack_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    for i in range(count):
        a, b = rng.sample(range(20), 2)
        tid = f"{seed}-{i}"
        transfer(conn, i, a, b, rng.randint(1, 9), tid)
        os.write(fd, f"{tid}\n".encode())
    conn.close()


def crash_victim(path, level, ack_log, seed, count):
    """Transfers (optimistic, read first) until the crash point kills this process."""
    conn = sqlite_concurrent.connect(path, lock_level=level, timeout=30)
    _acknowledged(
        conn,
        ack_log,
        seed,
        count,
        lambda c, _i, *args: c.transact(_logged_transfer, *args, retries=1000),
    )


def _escalating_transfer(conn, a, b, amount, transfer_id, think):
    # First a table nobody conflicts on, then the hot one: the escalation comes mid-way.
    conn.execute("INSERT INTO transfers(id, amount) VALUES (?, ?)", (transfer_id, amount))
    time.sleep(think)
    conn.execute("UPDATE accounts SET balance = balance - ? WHERE id = ?", (amount, a))
    conn.execute("UPDATE accounts SET balance = balance + ? WHERE id = ?", (amount, b))


def _direct_transfer(conn, a, b, amount, transfer_id):
    # A write first: the transaction runs directly from its first statement.
    conn.execute("UPDATE accounts SET balance = balance - ? WHERE id = ?", (amount, a))
    conn.execute("UPDATE accounts SET balance = balance + ? WHERE id = ?", (amount, b))
    conn.execute("INSERT INTO transfers(id, amount) VALUES (?, ?)", (transfer_id, amount))


def crash_direct_victim(path, level, ack_log, seed, count):
    """Like :func:`crash_victim`, with transactions that run directly."""
    conn = sqlite_concurrent.connect(path, lock_level=level, timeout=30, mode="direct")
    _acknowledged(
        conn,
        ack_log,
        seed,
        count,
        lambda c, _i, *args: c.transact(_direct_transfer, *args, retries=1000),
    )


def _make_hot(path, level):
    """A conflict on ``accounts`` in this process (two optimistic connections of one thread
    writing one row; at the table level, a deadlock), which makes the table hot for this
    process's transactions."""
    from sqlite_concurrent.engine import ways

    first = sqlite_concurrent.connect(path, lock_level=level, mode="optimistic")
    second = sqlite_concurrent.connect(path, lock_level=level, mode="optimistic")
    try:
        first.execute("UPDATE accounts SET balance = balance - 1 WHERE id = 0")
        first.execute("UPDATE accounts SET balance = balance + 1 WHERE id = 1")
        second.execute("UPDATE accounts SET balance = balance + 1 WHERE id = 0")
        second.execute("UPDATE accounts SET balance = balance - 1 WHERE id = 1")
        second.commit()
        first.commit()
    except sqlite_concurrent.ConflictError:
        pass
    finally:
        for conn in (first, second):
            if conn.in_transaction:
                conn.rollback()
            conn.close()
    assert ways.hot(os.path.realpath(path)).touched_by("accounts"), "nothing is hot"


def crash_escalating_victim(path, level, ack_log, seed, count):
    """Like :func:`crash_victim`, with transactions that escalate: their shape runs
    optimistically (its body is long) and ``accounts`` is hot (a conflict just happened)."""

    def transfer(conn, i, a, b, _amount, tid):
        if i >= 4:  # long bodies first, so that the shape goes optimistic
            _make_hot(path, level)
        with conn:  # not transact(): its first attempts overlap even at hot tables
            _escalating_transfer(conn, a, b, 1, tid, 0.004)

    conn = sqlite_concurrent.connect(path, lock_level=level, timeout=30, mode="auto")
    _acknowledged(conn, ack_log, seed, count, transfer)


def crash_replaying_victim(path, level, ack_log, seed, count):
    """Like :func:`crash_victim`, with transactions that go on directly by running their
    statements again: each writes, then reads (its body is long, so it began optimistic)."""

    def transfer(conn, i, a, b, amount, tid):
        # Six long bodies: the first four make the shape long, the next two go on directly and
        # keep it long, so the one after them goes on directly too: three visits for certain.
        # With four, the third hung on how long the first optimistic transaction took to open
        # its connection (seen once in CI, loaded).
        with conn:  # not transact(): there, reading does not make it go on directly
            _escalating_transfer(conn, a, b, amount, tid, 0.004 if i < 6 else 0)
            conn.execute("SELECT balance FROM accounts WHERE id = ?", (b,)).fetchone()

    conn = sqlite_concurrent.connect(path, lock_level=level, timeout=30, mode="auto")
    _acknowledged(conn, ack_log, seed, count, transfer)


def crash_rerun_victim(path, level, ack_log, seed, count):
    """Like :func:`crash_victim`, with transactions run again at commit: each observes
    nothing, runs optimistically (its body is long), and before it commits another
    connection moves money off the account it debits, so its merge conflicts."""
    other = sqlite_concurrent.connect(path, lock_level=level, timeout=30, mode="direct")

    def body(conn, i, a, b, amount, tid):
        _escalating_transfer(conn, a, b, amount, tid, 0.004)
        if i >= 4:  # long bodies first, so that the shape goes optimistic
            with other:
                other.execute("UPDATE accounts SET balance = balance - 1 WHERE id = ?", (a,))
                other.execute("UPDATE accounts SET balance = balance + 1 WHERE id = ?", (b,))

    # transact(): a first attempt does not escalate at the table the conflicts make hot.  Row
    # locks published late: the other connection, in this thread, must not wait for them.
    conn = sqlite_concurrent.connect(
        path, lock_level=level, timeout=30, mode="auto", row_lock_delay=60
    )
    _acknowledged(
        conn, ack_log, seed, count, lambda c, *args: c.transact(body, *args, retries=1000)
    )


@_report_errors
def crash_survivor(start, path, level, seed, count):
    start.wait()
    rng = random.Random(seed)
    conn = sqlite_concurrent.connect(path, lock_level=level, timeout=30)
    t0 = time.monotonic()
    for i in range(count):
        a, b = rng.sample(range(20), 2)
        conn.transact(_logged_transfer, a, b, 1, f"s{seed}-{i}", retries=1000)
    conn.close()
    return time.monotonic() - t0


def soak_writer(path, level, ack_log, seed, stop_file):
    """Transfers forever (until ``stop_file`` exists), logging each acknowledged one."""
    rng = random.Random(seed)
    # Half the writers group their commits, so kills also hit processes merging for others.
    conn = sqlite_concurrent.connect(path, lock_level=level, timeout=60, group_commit=seed % 2 == 0)
    conn.execute("PRAGMA synchronous=NORMAL")
    fd = os.open(ack_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    i = 0
    while not os.path.exists(stop_file):
        a, b = rng.sample(range(20), 2)
        tid = f"{seed}-{i}"
        conn.transact(_logged_transfer, a, b, rng.randint(1, 9), tid, retries=10_000)
        os.write(fd, f"{tid}\n".encode())
        i += 1
    conn.close()


@_report_errors
def transfers_signalling(start, path, level, seed, count, accounts, running):
    """Like level_transfers, but sets ``running`` after its first commit."""
    rng = random.Random(seed)
    conn = sqlite_concurrent.connect(path, lock_level=level, timeout=60)
    start.wait()
    for i in range(count):
        a, b = rng.sample(range(accounts), 2)
        conn.transact(_transfer, a, b, 1, retries=10_000)
        if i == 0:
            running.set()
    conn.close()
    return count


def wait_until_visible(path, resource="%", timeout=60.0):
    """Until a lock of this process's on ``resource`` (a LIKE pattern) shows in the lock
    database: a row-level transaction registers with its row locks, written a moment after its
    statements (``row_lock_delay``).  Polls the file, so no timer races the publisher; the
    timeout only bounds a broken run."""
    import apsw

    locks = apsw.Connection(path + "-locks", flags=apsw.SQLITE_OPEN_READONLY)
    try:
        deadline = time.monotonic() + timeout
        sql = (
            "SELECT 1 FROM transactions t JOIN locks l USING (txn_id) "
            "WHERE t.pid = ? AND l.resource LIKE ?"
        )
        while not locks.execute(sql, (os.getpid(), resource)).fetchone():
            assert time.monotonic() < deadline, "the transaction never showed in the lock database"
    finally:
        locks.close()


@_report_errors
def hold_transaction(start, path, statements, ready, proceed, mode=None):
    """Runs ``statements`` in one transaction, sets ``ready``, and commits once ``proceed`` is
    set (the test SIGKILLs it if it never is).  Returns ``"committed"``."""
    conn = sqlite_concurrent.connect(path, timeout=60, mode=mode)
    start.wait()
    conn.execute("BEGIN")
    for sql in statements:
        conn.execute(sql)
    if mode != "direct":  # a direct one holds the merge lock, and no lock there
        wait_until_visible(path)
    ready.set()
    assert proceed.wait(60), "never told to proceed"
    conn.commit()
    conn.close()
    return "committed"


@_report_errors
def commit_rows(
    start,
    path,
    rows,
    group_commit,
    table="t",
    level="row",
    row_lock_delay=None,
    ran=None,
    proceed=None,
):
    """One transaction adding 1 to each of ``rows``; returns "ok" once commit() returned.
    With ``ran`` and ``proceed``: sets ``ran`` once its statements ran and commits once
    ``proceed`` is set."""
    extra = {} if row_lock_delay is None else {"row_lock_delay": row_lock_delay}
    conn = sqlite_concurrent.connect(
        path, timeout=60, group_commit=group_commit, lock_level=level, **extra
    )
    start.wait()
    conn.execute("BEGIN")
    for row in rows:
        conn.execute(f"UPDATE {table} SET v = v + 1 WHERE id = ?", (row,))
    if ran is not None:
        ran.set()
        assert proceed.wait(60), "never told to proceed"
    conn.commit()
    conn.close()
    return "ok"


def exit_now():
    """A process that exits at once: its pid is then a dead one."""


@_report_errors
def hold_connection_then_write(start, path, ready, proceed, in_transaction):
    """Keep a connection (and, if asked, a transaction that has read) open while the test's
    process closes its own; then write on.  Returns (rows seen first, rows after committing)."""
    conn = sqlite_concurrent.connect(path, timeout=60)
    start.wait()
    if in_transaction:
        conn.execute("BEGIN")
    (first,) = conn.execute("SELECT count(*) FROM t").fetchone()
    ready.set()
    assert proceed.wait(60), "never told to proceed"
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(100 + i, f"held {i}") for i in range(5)])
    conn.commit()
    (after,) = conn.execute("SELECT count(*) FROM t").fetchone()
    conn.close()
    return first, after


@_report_errors
def read_rows(start, path, sql):
    """What a fresh process sees, through the stdlib."""
    import sqlite3

    start.wait()
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def fork_holding_merge_lock(queue, path):
    """Open an exclusive transaction (it holds the merge lock), fork a child that just lives
    on, report the child's pid, and wait to be killed."""
    import signal

    conn = sqlite_concurrent.connect(path, timeout=60)
    conn.execute("BEGIN")
    conn.execute("CREATE TABLE held_by_the_dead(x)")
    pid = os.fork()
    if pid == 0:
        signal.alarm(120)  # the test kills it sooner
        while True:
            signal.pause()
    queue.put(pid)
    while True:
        signal.pause()


@_report_errors
def temp_attached_savepoints(start, path, other, writer, txns):
    """Transactions that use a TEMP table, an attached file and savepoints at once, so each
    one moves onto the merger with its savepoints; returns (writer, TEMP rows seen).

    Two that both move wait for each other (each waits for the other to end): the younger
    gets ``DeadlockError`` and ``transact`` runs it again."""
    conn = sqlite_concurrent.connect(path, timeout=60)
    conn.execute(f"ATTACH '{other}' AS other")
    conn.execute("CREATE TEMP TABLE seen(i)")

    def body(conn, i):
        conn.execute("SAVEPOINT a")
        conn.execute("INSERT INTO m(writer, i) VALUES (?, ?)", (writer, i))
        conn.execute("INSERT INTO seen VALUES (?)", (i,))
        conn.execute("INSERT INTO other.log(writer, i) VALUES (?, ?)", (writer, i))
        conn.execute("SAVEPOINT b")
        conn.execute("INSERT INTO m(writer, i) VALUES (?, ?)", (writer, -1 - i))
        conn.execute("ROLLBACK TO b")
        conn.execute("RELEASE a")

    start.wait()
    for i in range(txns):
        conn.transact(body, i, retries=100)
    seen = conn.execute("SELECT count(*) FROM seen").fetchone()[0]
    conn.close()
    return writer, seen


@_report_errors
def stock_write_under_our_merge(start, path, sql, writing):
    """A stock writer (the stdlib's sqlite3): holds the database's write lock with ``sql``
    written, sets ``writing``, and commits once a process of ours holds the merge lock (and
    so waits for this write lock).  Returns "committed"."""
    from sqlite_concurrent.locking import oslock

    conn = sqlite3.connect(path, timeout=60, isolation_level=None)
    start.wait()
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(sql)
    oslock.present(path + "-locks")
    writing.set()
    deadline = time.monotonic() + 60
    while not oslock.held_elsewhere(path + "-locks", oslock.MERGE):
        assert time.monotonic() < deadline, "nobody took the merge lock"
        time.sleep(0.005)
    conn.execute("COMMIT")
    conn.close()
    return "committed"


@_report_errors
def prune_markers(start, path, ready):
    """Prune commit markers as a process does after every so many commits; sets ``ready``
    once its connection is open, prunes once ``start`` is set."""
    from sqlite_concurrent.engine import database

    conn = sqlite_concurrent.connect(path)
    conn.execute("SELECT count(*) FROM t").fetchall()
    ready.set()
    start.wait()
    db = conn._db
    db.merges = database._MARKER_PRUNE_EVERY - 1  # this commit's housekeeping prunes
    db.after_merge()
    conn.close()
    return "pruned"


@_report_errors
def take_merge_lock(start, path, spin, one_cpu=False, held_for=0.0):
    """Take and release the merge lock of the database at ``path``, spinning for up to
    ``spin`` seconds first; with ``one_cpu``, on one CPU only; ``held_for``: how long this
    process's earlier holds of the lock took, on average."""
    from sqlite_concurrent.locking import oslock

    if one_cpu:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    lock = oslock.ByteLock(path + "-locks", oslock.MERGE, spin=spin)
    lock._hold = held_for
    start.wait()
    lock.acquire()
    lock.release()
    return "taken"
