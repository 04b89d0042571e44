"""Other users, simulated: forked children that take a uid, gids and umask, stepped through pipes.

Forked, not spawned: the interpreter and its standard library may sit where other users cannot
read them (a root-only home), so everything a child needs is imported before it forks, and
after ``setuid`` it only runs code already loaded.  As root any numeric uid and gid will do; no
account needs to exist.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

import sqlite_concurrent
import sqlite_concurrent.storage.overlay

MODULES = {"stdlib": sqlite3, "ours": sqlite_concurrent}


def require_root() -> None:
    if os.geteuid() != 0:
        reason = "needs root: the test runs processes as other uids and gids (os.setuid)"
        print(f"SKIPPED: {reason}")
        pytest.skip(reason)


@dataclass(frozen=True)
class User:
    uid: int
    gid: int
    groups: tuple[int, ...] = ()
    umask: int = 0o022


ROOT = User(0, 0, (0,))


def owner_of(path: str) -> tuple[str, int, int]:
    """(permission bits, uid, gid) of ``path``, without following a link."""
    st = os.lstat(path)
    return oct(stat.S_IMODE(st.st_mode)), st.st_uid, st.st_gid


@contextlib.contextmanager
def directory(uid: int, gid: int, mode: int) -> Iterator[str]:
    """A directory other users can reach (pytest's own tmp_path is root's alone)."""
    path = tempfile.mkdtemp(prefix="sc-users-", dir="/tmp")
    try:
        os.chown(path, uid, gid)
        os.chmod(path, mode)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def make_database(path: str, uid: int, gid: int, mode: int, journal_mode: str) -> None:
    """A database with a table ``t``, owned and moded as given, and no -wal/-shm yet."""
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA journal_mode={journal_mode}")
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)")
    conn.commit()
    conn.close()
    os.chown(path, uid, gid)
    os.chmod(path, mode)


class Actor:
    """A child process running as ``user`` that opens, writes and closes one database."""

    def __init__(self, user: User, module: str, db: str) -> None:
        commands_r, self._commands = os.pipe()
        self._replies, replies_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            os.close(self._commands)
            os.close(self._replies)
            code = 1
            try:
                _serve(user, MODULES[module], db, commands_r, replies_w)
                code = 0
            finally:
                os._exit(code)
        os.close(commands_r)
        os.close(replies_w)
        self._reader = os.fdopen(self._replies, "r")

    def do(self, command: str) -> str:
        """Run ``open`` (connect, write a transaction big enough to use a journal, stay open)
        or ``close``; returns ``ok`` or the exception's class and message."""
        os.write(self._commands, command.encode() + b"\n")
        line = self._reader.readline()
        assert line, f"actor {self.pid} died"
        return str(json.loads(line))

    def stop(self) -> None:
        # Said, not signalled by closing the pipe: actors forked later hold copies of its end.
        os.write(self._commands, b"exit\n")
        os.close(self._commands)
        self._reader.close()
        _, status = os.waitpid(self.pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0


def _serve(user: User, module: object, db: str, commands: int, replies: int) -> None:
    os.setgroups(list(user.groups))
    os.setgid(user.gid)
    os.setuid(user.uid)
    os.umask(user.umask)
    # A transaction of more than a few pages then spills them to the process's journal.
    sqlite_concurrent.storage.overlay.MEMORY_BUDGET = 16 * 4096
    conn = None
    with os.fdopen(commands, "r") as lines:
        for line in lines:
            if line.strip() == "exit":
                break
            try:
                if line.strip() == "open":
                    conn = module.connect(db, timeout=60)  # type: ignore[attr-defined]
                    conn.execute("PRAGMA cache_size = 10")  # SQLite's cache spills early too
                    conn.execute("PRAGMA journal_mode=WAL")  # ours switches on connect
                    conn.executemany("INSERT INTO t(b) VALUES (randomblob(3000))", [()] * 40)
                    conn.commit()
                elif conn is not None:
                    conn.close()
                    conn = None
                reply = "ok"
            except Exception as e:
                reply = f"{type(e).__name__}: {e}"
            os.write(replies, json.dumps(reply).encode() + b"\n")
