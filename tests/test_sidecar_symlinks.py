"""A symbolic link planted at one of our sidecars' names is refused, never written through.

Anyone who can write the database's directory can plant one, and a process running as root
would otherwise truncate, overwrite or chmod whatever it points at.  The stdlib refuses a
link at -wal the same way (SQLite opens it with O_NOFOLLOW).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

import sqlite_concurrent
from sqlite_concurrent.cli import check, status
from sqlite_concurrent.storage import journal, overlay

# Tests of the optimistic machinery: transactions overlap in one thread or across processes.
pytestmark = pytest.mark.usefixtures("optimistic")


@pytest.fixture
def db(db_path: str) -> str:
    conn = sqlite_concurrent.connect(db_path)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)")
    conn.commit()
    conn.close()
    return db_path


@pytest.fixture
def target(tmp_path) -> str:
    """Another application's SQLite database: what a link could point at."""
    path = str(tmp_path / "precious.db")
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE precious(x)")
    conn.execute("INSERT INTO precious VALUES ('keep')")
    conn.commit()
    conn.close()
    os.chmod(path, 0o600)
    return path


def _state(path: str) -> tuple[bytes, int, int, int]:
    st = os.stat(path)
    with open(path, "rb") as f:
        return f.read(), st.st_mode, st.st_uid, st.st_size


def _big_transaction(conn: sqlite_concurrent.Connection) -> None:
    """Writes more pages than the overlay keeps in memory: the rest go to the journal."""
    conn.execute("PRAGMA cache_size = 10")
    conn.executemany("INSERT INTO t(b) VALUES (randomblob(3000))", [()] * 40)
    conn.commit()


def _refused(error: pytest.ExceptionInfo[BaseException], link: str) -> None:
    assert isinstance(error.value, sqlite3.OperationalError)
    assert isinstance(error.value, sqlite_concurrent.OperationalError)
    assert link in str(error.value)
    assert "symbolic link" in str(error.value)


def _works_once_removed(db: str, link: str) -> None:
    # The refused open's own last close may have removed a link at a lock-database name
    # already (removing a link never touches its target).
    if os.path.lexists(link):
        os.unlink(link)
    conn = sqlite_concurrent.connect(db)
    _big_transaction(conn)
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (40,)
    conn.close()


@pytest.fixture
def small_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(overlay, "MEMORY_BUDGET", 16 * 4096)


@pytest.mark.usefixtures("small_budget")
def test_journal_link_is_refused_and_its_target_untouched(db: str, target: str) -> None:
    link = journal.path_for(db, os.getpid())
    os.symlink(target, link)
    before = _state(target)
    conn = sqlite_concurrent.connect(db)
    with pytest.raises(sqlite3.Error) as error:
        _big_transaction(conn)
    conn.close()
    _refused(error, link)
    assert _state(target) == before
    assert os.path.islink(link)
    _works_once_removed(db, link)


@pytest.mark.usefixtures("small_budget")
def test_dangling_journal_link_creates_nothing(db: str, tmp_path) -> None:
    link = journal.path_for(db, os.getpid())
    missing = str(tmp_path / "created-through-the-link")
    os.symlink(missing, link)
    conn = sqlite_concurrent.connect(db)
    with pytest.raises(sqlite3.Error) as error:
        _big_transaction(conn)
    conn.close()
    _refused(error, link)
    assert not os.path.lexists(missing)
    _works_once_removed(db, link)


@pytest.mark.parametrize("suffix", ["-locks", "-locks-wal", "-locks-shm"])
def test_lock_database_link_is_refused_and_its_target_untouched(
    db: str, target: str, suffix: str
) -> None:
    link = db + suffix
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(target, link)
    before = _state(target)
    with pytest.raises(sqlite3.Error) as error:
        sqlite_concurrent.connect(db)
    _refused(error, link)
    assert _state(target) == before
    for suffix in ("-wal", "-shm", "-journal"):
        assert not os.path.lexists(target + suffix)
    _works_once_removed(db, link)


@pytest.mark.parametrize("suffix", ["-locks", "-locks-wal", "-locks-shm"])
def test_dangling_lock_database_link_creates_nothing(db: str, tmp_path, suffix: str) -> None:
    link = db + suffix
    if os.path.lexists(link):
        os.unlink(link)
    missing = str(tmp_path / "created-through-the-link")
    os.symlink(missing, link)
    with pytest.raises(sqlite3.Error) as error:
        sqlite_concurrent.connect(db)
    _refused(error, link)
    assert not os.path.lexists(missing)
    _works_once_removed(db, link)


@pytest.mark.parametrize("suffix", ["-locks", "-locks-wal"])
def test_status_reads_nothing_through_a_link(db: str, target: str, suffix: str) -> None:
    link = db + suffix
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(target, link)
    before = _state(target)
    with pytest.raises(status.StatusError, match="symbolic link") as error:
        status.read(db)
    assert link in str(error.value)
    assert _state(target) == before
    for suffix in ("-wal", "-shm"):
        assert not os.path.lexists(target + suffix)


def test_database_reached_through_a_link_keeps_its_sidecars_beside_the_file(
    db: str, tmp_path
) -> None:
    """SQLite resolves a link to the database and puts -wal beside the file; so do we, and
    every name for the database shares one lock database."""
    link = str(tmp_path / "elsewhere" / "link.db")
    os.mkdir(os.path.dirname(link))
    os.symlink(db, link)
    by_link = sqlite_concurrent.connect(link)
    by_name = sqlite_concurrent.connect(db)
    by_link.execute("INSERT INTO t(b) VALUES ('through the link')")
    by_link.commit()
    assert by_name.execute("SELECT b FROM t").fetchall() == [("through the link",)]
    assert os.listdir(os.path.dirname(link)) == ["link.db"]
    for suffix in ("-wal", "-shm", "-locks", "-locks-wal", "-locks-shm"):
        assert os.path.exists(db + suffix)
    by_name.close()
    by_link.close()


@pytest.mark.usefixtures("small_budget")
def test_file_left_at_our_journal_name_is_set_aside_not_truncated(db: str) -> None:
    """A dead process that had this pid left it: it is disposed of like any dead process's
    journal (something that is not a journal is quarantined), and ours is created anew."""
    left = journal.path_for(db, os.getpid())
    with open(left, "wb") as f:
        f.write(b"not a journal, and not ours to truncate")
    conn = sqlite_concurrent.connect(db)
    _big_transaction(conn)
    quarantined = [p for p in os.listdir(os.path.dirname(db)) if ".quarantined-" in p]
    assert len(quarantined) == 1
    with open(os.path.join(os.path.dirname(db), quarantined[0]), "rb") as f:
        assert f.read() == b"not a journal, and not ours to truncate"
    assert os.stat(left).st_mode & 0o777 == os.stat(db).st_mode & 0o777
    conn.close()


def test_status_and_check_through_a_link_to_the_database_see_its_lock_database(
    db: str, tmp_path
) -> None:
    link = str(tmp_path / "link.db")
    os.symlink(db, link)
    conn = sqlite_concurrent.connect(db)
    conn.execute("INSERT INTO t(b) VALUES (1)")
    try:
        view = status.read(link)
        assert [h.pid for h in view.holders] == [os.getpid()]
        findings = check.run(Path(link), 5.0)
        lock = [f for f in findings if f.name == "lock database"]
        assert [f.outcome for f in lock] == [check.OK], lock
        assert "1 holder" in lock[0].detail, lock
    finally:
        conn.close()
