"""Nothing but the stdlib's exception classes leaves the library, with messages naming the
file: a full disk while writers commit, and a lock database this process may not write; every
command of the CLI turns such an error into one ``error:`` line and exit status 2, and
``check`` reports it."""

from __future__ import annotations

import os
import queue
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SPAWN, integrity_ok

import sqlite_concurrent

CLI = [sys.executable, "-m", "sqlite_concurrent"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
WRITERS = 3


# -- a full disk -------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of its own, so that the test fills a disk that is nobody else's."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        reason = f"cannot mount a small tmpfs to fill: {done.stderr.strip() or done.returncode}"
        print(reason)
        pytest.skip(reason)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def full_disk_writer(start, results, freed, db_path: str, n: int) -> None:  # type: ignore[no-untyped-def]
    """Commit rows until the disk is full (five failures in a row), report, wait until space
    is freed, then commit once more on the same connection."""
    acked: list[str] = []
    raised: list[tuple[str, bool, str]] = []

    def note(e: BaseException, token: str = "") -> None:
        kind = f"{type(e).__module__}.{type(e).__name__}"
        raised.append((kind, isinstance(e, sqlite3.Error), f"{token}: {e}"))

    conn = sqlite_concurrent.connect(db_path, timeout=30)
    results.put(("ready", n))
    start.wait()
    failures = 0
    for i in range(5000):
        if failures == 5:
            break
        token = f"{n}-{i}"
        try:
            conn.execute("INSERT INTO t(token, pad) VALUES (?, randomblob(6000))", (token,))
            conn.commit()
        except BaseException as e:
            note(e, token)
            failures += 1
            try:
                conn.rollback()
            except BaseException as e2:
                note(e2)
            continue
        acked.append(token)
        failures = 0
    results.put(("full", n))
    freed.wait()
    after = None
    try:
        conn.execute("INSERT INTO t(token, pad) VALUES (?, 'after')", (f"{n}-after",))
        conn.commit()
        acked.append(f"{n}-after")
        after = "committed"
    except BaseException as e:
        note(e)
        after = repr(e)
    try:
        conn.close()
    except BaseException as e:
        note(e)
    results.put(("done", n, acked, raised, after))


@pytest.mark.timeout(120)
def test_full_disk_raises_only_sqlite3_errors_and_loses_no_acknowledged_commit(
    small_disk: Path,
) -> None:
    db_path = str(small_disk / "app.db")
    conn = sqlite_concurrent.connect(db_path)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, token TEXT UNIQUE, pad BLOB)")
    conn.commit()
    conn.close()
    ballast = small_disk / "ballast"
    ballast.write_bytes(b"\0" * (1 << 20))

    start, freed, results = SPAWN.Event(), SPAWN.Event(), SPAWN.Queue()
    procs = [
        SPAWN.Process(target=full_disk_writer, args=(start, results, freed, db_path, n))
        for n in range(WRITERS)
    ]
    for p in procs:
        p.start()
    try:
        # Every writer connected (an open writes to the lock database) before any fills the disk.
        ready = [results.get(timeout=60) for _ in procs]
        assert sorted(m[0] for m in ready) == ["ready"] * WRITERS
        start.set()
        full = [results.get(timeout=90) for _ in procs]
        assert sorted(m[0] for m in full) == ["full"] * WRITERS
        ballast.unlink()
        freed.set()
        done = [results.get(timeout=60) for _ in procs]
    except queue.Empty:
        pytest.fail("a writer did not report")
    finally:
        freed.set()
        for p in procs:
            p.join(timeout=30)
    acked = [token for d in done for token in d[2]]
    raised = [r for d in done for r in d[3]]
    assert raised, "the disk never filled"
    assert [r for r in raised if not r[1]] == [], "exceptions that are not sqlite3.Error"
    assert [d[4] for d in done] == ["committed"] * WRITERS
    assert any("full" in r[2] for r in raised), raised[:5]
    # A new connection commits too, and every acknowledged commit is there.
    conn = sqlite_concurrent.connect(db_path)
    conn.execute("INSERT INTO t(token) VALUES ('new')")
    conn.commit()
    found = {token for (token,) in conn.execute("SELECT token FROM t")}
    conn.close()
    assert set(acked) | {"new"} <= found
    extra = found - set(acked) - {"new"}
    assert not extra, [r for r in raised if r[2].split(":")[0] in extra]
    assert integrity_ok(db_path)


# -- a lock database this process may not write ------------------------------------------------

# Root without CAP_DAC_OVERRIDE: file permission bits apply to it as to any user, so a
# root-owned 0444 lock database is one this process cannot write (setpriv, util-linux).
NO_OVERRIDE = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]

_CONNECT = """
import json, sqlite3, sys, sqlite_concurrent
try:
    sqlite_concurrent.connect(sys.argv[1]).execute("SELECT 1")
    print(json.dumps(None))
except BaseException as e:
    print(json.dumps([type(e).__name__, isinstance(e, sqlite3.OperationalError), str(e)]))
"""


@pytest.fixture
def unwritable_locks(tmp_path: Path) -> Path:
    if shutil.which("setpriv") is None:
        reason = "setpriv (util-linux) is needed to drop CAP_DAC_OVERRIDE"
        print(reason)
        pytest.skip(reason)
    probe = subprocess.run([*NO_OVERRIDE, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        reason = f"cannot drop CAP_DAC_OVERRIDE: {probe.stderr.strip()}"
        print(reason)
        pytest.skip(reason)
    db = tmp_path / "app.db"
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, apsw, sqlite_concurrent as s;"
            "c = s.connect(sys.argv[1]); c.execute('CREATE TABLE t(x)'); c.commit();"
            # A copy of the lock database taken while in use: the last close removes it.
            "l = apsw.Connection(sys.argv[1] + '-locks', flags=apsw.SQLITE_OPEN_READONLY);"
            "l.execute('VACUUM INTO ?', (sys.argv[1] + '-locks.copy',)); l.close(); c.close()",
            str(db),
        ],
        check=True,
        env=ENV,
    )
    os.replace(f"{db}-locks.copy", f"{db}-locks")
    os.chmod(f"{db}-locks", 0o444)
    return db


def _as_unprivileged(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NO_OVERRIDE, *args], capture_output=True, text=True, env=ENV)


@pytest.mark.timeout(60)
def test_unwritable_lock_database_is_an_operational_error_naming_it(unwritable_locks: Path) -> None:
    import json

    proc = _as_unprivileged(sys.executable, "-c", _CONNECT, str(unwritable_locks))
    assert proc.returncode == 0, proc.stderr
    name, operational, message = json.loads(proc.stdout)
    assert operational, (name, message)
    assert f"{unwritable_locks}-locks" in message and "ermission denied" in message


@pytest.mark.timeout(60)
def test_cli_reports_an_unwritable_lock_database_in_one_line(unwritable_locks: Path) -> None:
    recover = _as_unprivileged(*CLI, "recover", str(unwritable_locks))
    assert recover.returncode == 2, recover.stdout + recover.stderr
    assert recover.stderr.startswith("error: ") and recover.stderr.count("\n") == 1, recover.stderr
    assert f"{unwritable_locks}-locks" in recover.stderr
    check = _as_unprivileged(*CLI, "check", str(unwritable_locks))
    assert check.returncode == 1, check.stdout + check.stderr
    assert "FAIL" in check.stdout and "not writable" in check.stdout, check.stdout
    stress = _as_unprivileged(*CLI, "stress", str(unwritable_locks), "--duration", "0.2")
    assert "Traceback" not in stress.stdout + stress.stderr, stress.stderr[-2000:]
