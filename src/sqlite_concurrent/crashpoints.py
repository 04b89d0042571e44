"""Named points in the commit path where a process can be made to die, for crash tests.

The one mechanism: start a process with ``SQLITE_CONCURRENT_CRASH_AT=<point>[@<hit>][:exit]``
in its environment.  The ``<hit>``-th time (default 1) it reaches ``<point>`` it dies at once:
SIGKILL to itself (default), or ``os._exit(70)`` with ``:exit``.  Nothing else in the library
behaves differently under test.  ``tests/test_crash.py`` kills at every point at every lock
level, and fails if a point declared here is not placed in the code or vice versa.
"""

from __future__ import annotations

import os
import signal

ENV = "SQLITE_CONCURRENT_CRASH_AT"

POINTS = (
    "begin.registered",  # the transaction is in the lock database, nothing pinned yet
    "begin.pinned",  # its snapshot is pinned
    "execute.statement",  # a statement ran on the private view; its locks are taken
    "commit.prepared",  # changeset taken, private view rolled back, merge not started
    "merge.locked",  # holds the merge lock, no SQLite write transaction yet
    "merge.before_apply",  # validated inside the write transaction, nothing applied
    "merge.mid_apply",  # part of the changeset applied
    "merge.after_apply",  # all applied and the commit marker written, not committed
    "merge.after_commit",  # committed, merge lock still held, not acknowledged
    "ack.before_release",  # committed, locks still held in the lock database
    "ack.after_release",  # everything released, commit() about to return
    "direct.begun",  # a direct transaction holds the merge lock and its SQLite write transaction
    "escalate.applied",  # an escalated one applied its work so far on the merger, not committed
    "direct.committed",  # a direct or escalated one committed, merge lock still held
    "escalate.replayed",  # one that wrote and is being observed ran again on the merger
    "rerun.ran",  # a conflicting one ran again on the merger, not committed
)


def _parse(spec: str) -> tuple[str, int, bool] | None:
    if not spec:
        return None
    spec, _, mode = spec.partition(":")
    point, _, hit = spec.partition("@")
    if point not in POINTS or mode not in ("", "exit", "kill") or (hit and not hit.isdigit()):
        raise ValueError(
            f"{ENV}={spec!r}: expected <point>[@<hit>][:exit|:kill] with a point among "
            + ", ".join(POINTS)
        )
    return point, int(hit or 1), mode == "exit"


_armed = _parse(os.environ.get(ENV, ""))
_hits = 0


def armed(point: str) -> bool:
    return _armed is not None and _armed[0] == point


def reach(point: str) -> None:
    """Die here if this process was started to die here."""
    global _hits
    if _armed is None or _armed[0] != point:
        return
    _hits += 1
    if _hits < _armed[1]:
        return
    if _armed[2]:
        os._exit(70)
    os.kill(os.getpid(), signal.SIGKILL)
