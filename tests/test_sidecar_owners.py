"""Our sidecars get the permission bits and owner SQLite gives the database's own -wal.

Each scenario runs twice, in two identical directories: once with the stdlib module, once with
ours.  Every step must have the same outcome in both, and every file of ours created during a
step must have the mode, owner and group the stdlib's -wal got in the same step.  Each
process's journal ``-journal<PID>`` is compared with the -wal that process itself gets from the
stdlib on the same database (a -wal is created by whoever opens first; a journal by each).
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass

import pytest
from sidecar_users import ROOT, Actor, User, directory, make_database, owner_of, require_root

# Tests of the optimistic machinery: transactions overlap in one thread or across processes.
pytestmark = pytest.mark.usefixtures("optimistic")

OWNER = User(4101, 4100, (4100,))
MEMBER = User(4102, 4100, (4100,))
OURS = ("-wal", "-shm", "-locks", "-locks-wal", "-locks-shm")
Step = tuple[str, str]  # (actor name, "open" or "close")
Files = dict[str, tuple[int, tuple[str, int, int]]]  # suffix -> (inode, owner_of)


@dataclass(frozen=True)
class Setup:
    """A directory and a database in it, made the same way for each run."""

    dir_owner: tuple[int, int, int]  # uid, gid, mode
    db_owner: tuple[int, int, int]
    journal_mode: str  # the database's as made: "delete" ones are switched to WAL on open


def _files(db: str) -> Files:
    found: Files = {}
    for path in glob.glob(glob.escape(db) + "-*"):
        found[path[len(db) :]] = (os.lstat(path).st_ino, owner_of(path))
    return found


def _run(module: str, setup: Setup, users: dict[str, User], steps: list[Step]):
    """Outcome of each step and the files beside the database after it."""
    with directory(*setup.dir_owner) as where:
        db = os.path.join(where, "app.db")
        make_database(db, *setup.db_owner, setup.journal_mode)
        actors = {name: Actor(user, module, db) for name, user in users.items()}
        try:
            outcomes, after = [], []
            for name, command in steps:
                outcomes.append(f"{name} {command}: {actors[name].do(command)}")
                after.append(_files(db))
            journals = {name: f"-journal{actor.pid}" for name, actor in actors.items()}
        finally:
            for actor in actors.values():
                actor.stop()
    return outcomes, after, journals


def _stock_wal(setup: Setup, user: User) -> tuple[str, int, int]:
    """What the stdlib gives -wal when ``user`` opens the database first."""
    outcomes, after, _ = _run("stdlib", setup, {"u": user}, [("u", "open")])
    assert outcomes == ["u open: ok"]
    return after[0]["-wal"][1]


def check(setup: Setup, users: dict[str, User], steps: list[Step]) -> None:
    require_root()
    stock, stock_after, _ = _run("stdlib", setup, users, steps)
    ours, our_after, journals = _run("ours", setup, users, steps)
    assert ours == stock
    assert all(line.endswith(": ok") for line in stock), stock
    journal_wal = {name: _stock_wal(setup, users[name]) for name in users}
    before: Files = {}
    stock_before: Files = {}
    for (name, command), stdlib, files in zip(steps, stock_after, our_after, strict=True):
        where = f"after {name} {command}"
        if command == "open":
            # The process writes in a journal of its own while its connection is open.
            mine = files.get(journals[name])
            assert mine is not None, f"{where}: no {journals[name]} in {sorted(files)}"
            assert mine[1] == journal_wal[name], f"{where}: {journals[name]}"
        new_wal = "-wal" in stdlib and stdlib["-wal"] != stock_before.get("-wal")
        for suffix in OURS:
            if suffix in files and files[suffix] != before.get(suffix):
                assert new_wal, f"{where}: {suffix} created while the stdlib kept its -wal"
                assert files[suffix][1] == stdlib["-wal"][1], f"{where}: {suffix}"
        before, stock_before = files, stdlib


HOLD_THEN_REOPEN: list[Step] = [
    ("first", "open"),
    ("second", "open"),
    ("second", "close"),
    ("first", "close"),
    ("second", "open"),
    ("second", "close"),
]
ONE_AFTER_THE_OTHER: list[Step] = [
    ("first", "open"),
    ("first", "close"),
    ("second", "open"),
    ("second", "close"),
    ("first", "open"),
    ("first", "close"),
]


# A database in rollback-journal mode is switched to WAL by whoever opens it first.
JOURNAL_MODES = pytest.mark.parametrize("journal_mode", ["wal", "delete"])


@JOURNAL_MODES
@pytest.mark.parametrize("umask", [0o022, 0o077])
@pytest.mark.parametrize("steps", [HOLD_THEN_REOPEN, ONE_AFTER_THE_OTHER], ids=["held", "closed"])
def test_root_first_then_owner(umask: int, steps: list[Step], journal_mode: str) -> None:
    """An administrator's shell or a cron job opens a user's 0640 database; the user still can."""
    setup = Setup((OWNER.uid, OWNER.gid, 0o755), (OWNER.uid, OWNER.gid, 0o640), journal_mode)
    root = User(ROOT.uid, ROOT.gid, ROOT.groups, umask)
    check(setup, {"first": root, "second": OWNER}, steps)


@JOURNAL_MODES
@pytest.mark.parametrize("umask", [0o002, 0o022, 0o077])
@pytest.mark.parametrize("steps", [HOLD_THEN_REOPEN, ONE_AFTER_THE_OTHER], ids=["held", "closed"])
def test_two_members_of_a_group(umask: int, steps: list[Step], journal_mode: str) -> None:
    """A 0660 database in a group-writable directory: either member opens first."""
    setup = Setup((0, OWNER.gid, 0o775), (OWNER.uid, OWNER.gid, 0o660), journal_mode)
    first = User(OWNER.uid, OWNER.gid, OWNER.groups, umask)
    second = User(MEMBER.uid, MEMBER.gid, MEMBER.groups, umask)
    check(setup, {"first": first, "second": second}, steps)


def test_user_who_cannot_write_the_directory_is_told_why() -> None:
    """While another process has the database open, the stdlib writes through its existing
    -wal and -shm; ours also needs a journal of its own beside the database, so the user gets
    an OperationalError that names it (the README's limits)."""
    require_root()
    with directory(0, 0, 0o755) as where:
        db = os.path.join(where, "app.db")
        make_database(db, 0, 0, 0o666, "wal")
        holder = Actor(ROOT, "ours", db)
        user = Actor(OWNER, "ours", db)
        try:
            assert holder.do("open") == "ok"
            reply = user.do("open")
        finally:
            user.stop()
            holder.stop()
    assert reply.startswith(f"OperationalError: cannot create {db}-journal{user.pid}: "), reply
    assert "write permission on its directory" in reply
