"""Creating and opening the files we keep beside a database, as SQLite treats its ``-wal``/``-shm``.

SQLite creates a database's ``-wal`` and ``-shm`` with the database file's permission bits,
whatever the umask, and when it runs as root gives them the database file's owner and group
(os_unix.c: ``findCreateFileMode``, ``robust_open``, ``robustFchown``), so every user who can
use the database can use them.  Ours (``<db>-locks``, ``<db>-journal<PID>``) get the same.

SQLite opens every file with ``O_NOFOLLOW``, so a symbolic link planted at ``-wal`` or ``-shm``
makes it fail rather than write through the link.  Ours never follow one either: a link at a
sidecar's name raises :class:`OperationalError` naming the file, and the link's target is left
alone.  Nothing here truncates or chmods a file it did not just create (``O_EXCL``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

from ..errors import OperationalError

_CREATE = os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def refused(path: str) -> OperationalError:
    return OperationalError(
        f"{path} is a symbolic link: sqlite_concurrent never follows links for the files it "
        "keeps beside a database; remove the link (its target was not touched)"
    )


def refuse_link(path: str) -> None:
    """Raise :func:`refused` if ``path`` is a symbolic link (dangling or not)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise refused(path)


def create(path: str, db_path: str, flags: int = os.O_RDWR) -> int:
    """A new file at ``path``, with ``db_path``'s permission bits and, as root, its owner.

    :raises FileExistsError: something (a file, a directory, a link) is already there.
    :raises OperationalError: the directory is not writable.
    """
    st = os.stat(db_path)
    mode = st.st_mode & 0o777
    try:
        fd = os.open(path, flags | _CREATE, mode)
    except PermissionError:
        raise OperationalError(
            f"cannot create {path}: permission denied; sqlite_concurrent keeps files beside "
            "the database, so each of its users needs write permission on its directory"
        ) from None
    try:
        os.fchmod(fd, mode)  # the umask narrowed it; SQLite's robust_open widens it back too
        if os.geteuid() == 0:
            os.fchown(fd, st.st_uid, st.st_gid)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    return fd


def open_existing(path: str, flags: int = os.O_RDWR) -> int:
    """Open an existing sidecar without following a link at ``path``.

    :raises OperationalError: ``path`` is a symbolic link, or not ours to open.
    :raises FileNotFoundError: nothing is there.
    """
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC)
    except PermissionError:
        raise _denied(path) from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise refused(path) from None
        raise


def _denied(path: str) -> OperationalError:
    try:
        st = os.stat(path)
        whose = f" (mode {stat.S_IMODE(st.st_mode):o}, uid {st.st_uid}, gid {st.st_gid})"
    except OSError:
        whose = ""
    return OperationalError(
        f"cannot open {path}: permission denied{whose}; give it the database file's owner, "
        "group and mode, or delete it while no process has the database open"
    )


def open_or_create(path: str, db_path: str) -> int:
    """A read-write descriptor on ``path``, created (see :func:`create`) if it is absent."""
    while True:
        try:
            return create(path, db_path)
        except FileExistsError:
            pass
        try:
            return open_existing(path)
        except FileNotFoundError:
            continue  # deleted between the two: create it after all


def ensure_sqlite_files(path: str) -> None:
    """Refuse links at the ``-wal``/``-shm`` SQLite keeps for the sidecar database ``path``.

    SQLite would refuse them too (``O_NOFOLLOW``), but only as "unable to open database file";
    this names the file.
    """
    for suffix in ("", "-wal", "-shm"):
        refuse_link(path + suffix)
