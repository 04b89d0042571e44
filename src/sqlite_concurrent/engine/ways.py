"""How each write transaction runs (docs/architecture.md, "Ways to run a transaction").

- **direct**: on the process's stock connection (the merger) under the merge lock, from its
  first statement to its end, as a stock ``BEGIN IMMEDIATE`` transaction.  Nothing to merge,
  so nothing to conflict; other writers wait for it, first come first served.
- **optimistic**: on a private view of a pinned snapshot, merged at commit.  Writers overlap
  for the whole body; a conflicting one fails at merge.
- **escalated**: optimistic until a statement reaches something hot (a table that recently
  conflicted), then direct from that statement on, with what it wrote so far applied first.

Which one is learned, not declared: per connection and transaction *shape* (the text of its
first statement), moving averages of how long the body (first statement to commit) waited and
computed, and of the conflict rate.  A body that waits less than what the optimistic path
itself costs runs direct, since holding the merge lock that long costs the others less than
the overlap saves; so does a shape that conflicts more often than not, since its overlap is
mostly wasted work and an application that does not retry would see the conflicts.
"""

from __future__ import annotations

import collections
import os
import re
import resource
import threading
import time
from collections.abc import Callable

from ..errors import ConflictError, ProgrammingError

MODES = ("auto", "optimistic", "direct")
ENV = "SQLITE_CONCURRENT_MODE"  # the mode of connections that do not name one
DIRECT, OPTIMISTIC, ESCALATED = "direct", "optimistic", "escalated"
REPLAYED = "replayed"  # optimistic, then run again directly after its merge conflicted

# About the CPU an optimistic transaction spends on its own machinery (snapshot, overlay,
# session, changeset, merge): 0.5-1 ms measured.  A body that waits (sleeps, does I/O) less
# than this between its statements runs direct: overlapping others' waits is what pays.
DIRECT_BELOW = 0.001
# A body computing longer than this runs optimistically too: its own CPU dwarfs the
# machinery's, and other cores can run others' bodies meanwhile.
CPU_ABOVE = 0.02
# A shape conflicting on more than this share of its optimistic runs runs direct.
CONFLICTS_ABOVE = 0.5
_WEIGHT = 0.25  # of the newest run in each moving average
_THREAD = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)
_MAX_SHAPES = 1024

# Seconds a conflict on a table keeps it hot for this process's transactions.
HOT_FOR = 2.0


def mode(requested: str | None) -> str:
    """The mode a connection runs in: ``requested``, else the environment's, else auto.

    :raises ProgrammingError: not one of :data:`MODES`.
    """
    where = "mode"
    if requested is None:
        requested, where = os.environ.get(ENV) or "auto", ENV
    if requested not in MODES:
        raise ProgrammingError(f"{where} must be one of {', '.join(MODES)}, not {requested!r}")
    return requested


class Body:
    """What a transaction's body (first statement to commit) cost: started by :meth:`start`,
    read by :meth:`measure`."""

    __slots__ = ("_cpu", "_switches", "_wall")

    def __init__(self) -> None:
        self._wall = self._cpu = 0.0
        self._switches = 0

    def start(self) -> None:
        self._wall = time.perf_counter()
        usage = resource.getrusage(_THREAD)  # the one system call: both figures at once
        self._cpu = usage.ru_utime + usage.ru_stime
        self._switches = usage.ru_nvcsw

    def restart_clock(self) -> None:
        """Start the wall clock again, keeping the CPU figures :meth:`start` read: taken just
        before a wait that did not sleep (a spin adds CPU time only, no voluntary switch)."""
        self._wall = time.perf_counter()

    def measure(self) -> tuple[float, float]:
        """(seconds it waited, seconds of CPU).  Waiting is what overlap pays for: a sleep,
        I/O, a lock.  Time spent preempted on a busy machine is not waiting: a body that never
        blocked (no voluntary context switch) waited nothing, however long it took."""
        wall = time.perf_counter() - self._wall
        if wall < DIRECT_BELOW:
            # Short whichever way it went, and most bodies are: no second system call.
            return 0.0, wall
        usage = resource.getrusage(_THREAD)
        cpu = max(0.0, usage.ru_utime + usage.ru_stime - self._cpu)
        blocked = usage.ru_nvcsw != self._switches
        return (max(0.0, wall - cpu) if blocked else 0.0), cpu


class Shapes:
    """Per connection: what transactions of each shape turned out to be."""

    def __init__(self) -> None:
        self._waited: dict[str, float] = {}
        self._cpu: dict[str, float] = {}
        self._conflicts: dict[str, float] = {}
        # Shapes that read first and then write: a short one may take the merge lock at its
        # first read, as BEGIN IMMEDIATE would, instead of paying for a snapshot it leaves at
        # its first write.  Shapes that only read never wait for anyone.
        self.writers: set[str] = set()

    def direct(self, shape: str, *, by_conflicts: bool = True) -> bool:
        """Whether a transaction of ``shape`` is predicted to run best directly; a shape
        never seen is (most transactions are short, and direct ones never conflict).
        ``by_conflicts``: a shape that conflicts more often than not does too (not for code
        that retries conflicts: overlapping still pays there)."""
        if by_conflicts and self._conflicts.get(shape, 0.0) > CONFLICTS_ABOVE:
            return True
        return self._waited.get(shape, 0.0) < DIRECT_BELOW and self._cpu.get(shape, 0.0) < CPU_ABOVE

    def ran(self, shape: str, waited: float, cpu: float, *, way: str, conflicted: bool) -> None:
        if (
            way == DIRECT
            and waited == 0.0
            and cpu < DIRECT_BELOW
            and self._waited.get(shape) == 0.0
            and self._cpu[shape] < DIRECT_BELOW
        ):
            # A short shape that never waited, short again: nothing :meth:`direct` reads can
            # change (its CPU stays far under ``CPU_ABOVE``).  Most transactions end here.
            return
        if len(self._waited) > _MAX_SHAPES:
            self._waited.clear()
            self._cpu.clear()
            self._conflicts.clear()
            self.writers.clear()
        # Clipped: one long wait must not move a short shape to the optimistic path, where it
        # could conflict; three in a row do.
        waited = min(waited, 2 * DIRECT_BELOW)
        old = self._waited.get(shape, 0.0)
        self._waited[shape] = old + (waited - old) * _WEIGHT
        old = self._cpu.get(shape, 0.0)
        self._cpu[shape] = old + (min(cpu, 2 * CPU_ABOVE) - old) * _WEIGHT
        if way != DIRECT:  # a direct run says nothing about conflicts: it cannot have one
            rate = self._conflicts.get(shape, 0.0)
            self._conflicts[shape] = rate + (float(conflicted) - rate) * _WEIGHT


class Hot:
    """Per process and database: tables where a transaction recently conflicted."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}  # table (lower case) -> hot until (monotonic)
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def mark(self, table: str | None) -> None:
        if not table:
            return
        with self._lock:
            self._until[table.lower()] = time.monotonic() + HOT_FOR
            self._pattern = None

    def touched_by(self, sql: str) -> bool:
        """Whether ``sql`` names a hot table.  By its text: a false match only makes the
        transaction run directly from here on, which is always correct."""
        if not self._until:
            return False
        with self._lock:
            now = time.monotonic()
            for name in [n for n, until in self._until.items() if until < now]:
                del self._until[name]
                self._pattern = None
            if not self._until:
                return False
            if self._pattern is None:
                names = "|".join(re.escape(n) for n in sorted(self._until, key=len, reverse=True))
                self._pattern = re.compile(rf"(?<![\w$])(?:{names})(?![\w$])", re.IGNORECASE)
            pattern = self._pattern
        return pattern.search(sql) is not None


def contested_table(error: BaseException) -> str | None:
    """The table a conflict (or a deadlock, by the resource it waited for) was about."""
    table = getattr(error, "table", None)
    if table:
        return str(table)
    kind, _, rest = str(getattr(error, "resource", "")).partition(":")
    if kind in ("table", "row") and rest:
        return rest.split(":", 1)[0]
    return None


_hot: dict[str, Hot] = {}
_hot_lock = threading.Lock()


def hot(path: str) -> Hot:
    """This process's hot tables of the database at ``path``."""
    found = _hot.get(path)
    if found is None:
        with _hot_lock:
            found = _hot.setdefault(path, Hot())
    return found


# The attempt of ``transact`` from which a transaction reaching a hot table goes directly.
DIRECT_FROM_ATTEMPT = 2


class Chooser:
    """Per connection: how each of its write transactions runs, from what transactions of the
    same shape cost before, and what the open one is (the way, its shape, its body so far).

    The connection asks it at a transaction's first statement (:meth:`prefers_direct`) and at
    each statement of an optimistic one (:meth:`escalates_at`), and tells it when one begins
    and ends (:meth:`began`, :meth:`learn`).  What only the connection can know (a live
    table-level transaction, another connection of the thread) it checks itself.
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.shapes = Shapes()
        self.hot: Hot | None = None  # the database's, once the connection opened a shared one
        self.way: str | None = None  # how the open transaction runs (DIRECT, ...)
        self.shape = ""  # the open transaction's first statement
        self.body = Body()  # what its body has cost so far
        self.escalation_tried = False  # it tried to go on directly (see ``escalates_at``)
        self.attempt: int | None = None  # which attempt of ``transact`` runs, if one does
        self.measured: tuple[float, float] | None = None  # its body, measured at commit
        self.rerun_after: BaseException | None = None  # the conflict a run again resolved
        # Transactions run each way since the connection opened (``Connection.ways``).
        self.counts: collections.Counter[str] = collections.Counter()

    def before_merge_lock(self) -> None:
        """A direct transaction is about to take the merge lock: its body's CPU figures are
        read now, so that their system call is not made while others wait for the lock."""
        if self.mode == "auto":
            self.body.start()

    def began(self, way: str, shape: str, *, started: bool = False) -> None:
        """``started``: :meth:`before_merge_lock` read the CPU figures, and the wait for the
        lock since did not sleep."""
        self.way = way
        self.escalation_tried = False
        self.shape = shape
        self.counts[way] += 1
        if self.mode == "auto":  # only predictions need it: four system calls a transaction
            if started:
                self.body.restart_clock()
            else:
                self.body.start()

    def escalated(self) -> None:
        """The open transaction went on directly from an optimistic start."""
        self.escalation_tried = True
        self._counted_as(ESCALATED)
        self.way = ESCALATED

    def replayed(self, conflict: BaseException) -> None:
        """The open optimistic transaction's merge hit ``conflict``; it ran again directly."""
        self.rerun_after = conflict
        self._counted_as(REPLAYED)

    def _counted_as(self, way: str) -> None:
        self.counts[OPTIMISTIC] -= 1
        self.counts[way] += 1

    def prefers_direct(self, sql: str, kind: str, immediate: bool) -> bool:
        """Whether a transaction whose first statement is ``sql`` should run directly."""
        hot = self.contended(sql)
        if kind != "dml" and not immediate and not hot and sql not in self.shapes.writers:
            # A read first: as in SQLite's deferred transaction, nobody waits for it until it
            # writes; it runs optimistically and escalates at its first write
            # (``escalates_at``), while what it read is still current.  Unless transactions
            # of its shape went on to write before: then, if short, it is direct from here.
            return False
        return (
            self.mode != "auto" or hot or self.shapes.direct(sql, by_conflicts=self.attempt is None)
        )

    def escalates_at(
        self, sql: str, kind: str, *, wrote: bool, fast_path_closed: Callable[[], bool]
    ) -> bool:
        """Whether the open optimistic transaction should go on directly from statement
        ``sql``: it reaches a hot table, or it is its first write and its shape is predicted
        short.  Tried once: what it read only gets older.  ``fast_path_closed``: whether a
        live table-level transaction or an exclusive operation rules a direct run out."""
        if self.mode == "optimistic" or self.escalation_tried or not (kind == "dml" or wrote):
            return False
        if kind == "dml" and self.shape:
            self.shapes.writers.add(self.shape)
        if self.contended(sql):
            self.escalation_tried = True
            return True
        if (
            kind == "dml"
            and not wrote
            and self.shape
            and (self.mode == "direct" or self.shapes.direct(self.shape))
            # As for a transaction that is direct from its start (``prefers_direct``).
            and not fast_path_closed()
        ):
            self.escalation_tried = True
            return True
        return False

    def contended(self, sql: str) -> bool:
        """Whether ``sql`` reaches a hot table (:class:`Hot`) where it matters: in code that
        does not retry, a conflict is an error the stdlib would not have raised; under
        ``transact`` only a retry, so only a second retry goes directly (a first one
        usually commits: conflicts spread over many rows rarely strike twice)."""
        return (
            self.hot is not None
            and (self.attempt is None or self.attempt >= DIRECT_FROM_ATTEMPT)
            and self.hot.touched_by(sql)
        )

    def measure_body(self) -> None:
        """At commit: the body ends here, and what follows is the commit's own cost."""
        if self.mode == "auto":
            self.measured = self.body.measure()

    def learn(self, error: BaseException | None = None) -> None:
        """The open transaction ended (or is about to): remember what its shape cost."""
        way, self.way = self.way, None
        if error is None:  # committed: perhaps run again after a conflict
            error, self.rerun_after = self.rerun_after, None
        if way is None:
            return
        conflicted = isinstance(error, ConflictError)
        if conflicted and self.hot is not None:
            self.hot.mark(contested_table(error))
        if self.mode == "auto" and self.shape:
            waited, cpu = self.measured if self.measured is not None else self.body.measure()
            self.shapes.ran(self.shape, waited, cpu, way=way, conflicted=conflicted)
        self.measured = None
