"""Waking the checkpointer when a snapshot is let go.

A restart checkpoint can succeed only once no transaction still reads an old snapshot.  While
the snapshot gate is closed no new snapshot is pinned, so the transactions still running end one
by one; each sends one datagram after releasing its snapshot, and the checkpointer, sleeping in
``select()`` on its socket, tries again at once instead of waiting in SQLite's busy handler.
Sockets live in Linux's abstract namespace, named after the ``-locks`` file (as in
:mod:`.waits`): nothing to clean up after a crash, and a datagram to a name nobody has bound
fails at once.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading

from ..locking import oslock

_sender: socket.socket | None = None
_sender_lock = threading.Lock()
# -locks paths whose checkpointer, in this process, listens now.
_listening_here: set[str] = set()


def _address(locks_path: str) -> bytes:
    # Looked up each time (a microsecond): a -locks file made afresh is another file.
    st = os.stat(locks_path)
    return b"\0sqlite-concurrent-drain:%d:%d" % (st.st_dev, st.st_ino)


def _forked() -> None:
    global _sender, _sender_lock
    _sender, _sender_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forked)


def released(locks_path: str) -> None:
    """A snapshot of the database of ``locks_path`` was let go: wake its checkpointer, if one
    has closed the snapshot gate (almost never: then it costs one system call)."""
    global _sender
    try:
        if locks_path not in _listening_here and not oslock.held_elsewhere(
            locks_path, oslock.SNAPSHOT_GATE
        ):
            return
    except OSError:
        return
    with contextlib.suppress(OSError):
        address = _address(locks_path)
        with _sender_lock:
            if _sender is None:
                _sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                _sender.setblocking(False)
            # Nobody listening (the usual case) fails with ECONNREFUSED; a full queue already
            # holds a wake-up.
            _sender.sendto(b"\0", address)


class Listener:
    """The one checkpointer that closed the gate listens; a second bind fails (EADDRINUSE)."""

    def __init__(self, locks_path: str) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self._sock.bind(_address(locks_path))
        except OSError:
            self._sock.close()
            raise
        self._sock.setblocking(False)
        self._locks_path = locks_path
        _listening_here.add(locks_path)

    def wait(self, timeout: float) -> None:
        """Until a snapshot is released or ``timeout`` seconds pass; drains queued wake-ups."""
        readable, _, _ = select.select([self._sock], [], [], max(0.0, timeout))
        if readable:
            with contextlib.suppress(BlockingIOError):
                while True:
                    self._sock.recv(16)

    def close(self) -> None:
        _listening_here.discard(self._locks_path)
        self._sock.close()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
