"""What SQLite keeps per connection: TEMP objects and attached databases.

One connection of ours is several SQLite connections (architecture.md, "A commit, straight down"): a
reader for autocommit reads, a transaction connection through the overlay VFS, and the merger, on
which merges and exclusive operations run.  SQLite keeps TEMP objects and attached databases on each
of its connections separately, yet the application must see them as the stdlib's one connection
shows them:

* An attached database FILE is attached to the reader and to the transaction connection as well
  as to the merger, so a statement reads it wherever it runs.  Only the merger writes it: the
  other two refuse writes to anything but ``main`` (their authorizers), which makes such a write
  an exclusive operation (architecture.md, "Exclusive operations"), as a schema change is.
* TEMP objects, and attached in-memory databases, cannot be copied: their rows live in one
  connection's memory, and writes to them must roll back with the transaction that made them.
  They live on the merger only, where exclusive operations already run (``CREATE TEMP TABLE``
  was always one), and every statement that touches them runs there too: outside a transaction
  at once if it writes nothing else, otherwise as an exclusive operation, which moves the
  transaction's work so far onto the merger.  So they are visible to every later statement of
  the connection, invisible to others, gone at close, and roll back with their transaction.

Whether a statement touches them is asked of SQLite itself, not guessed from the SQL text:
while the connection has any, each statement is first prepared (never run) on the merger, whose
authorizer hears the schema of every table read or written (a TEMP table that shadows a ``main``
one included) and the trigger or view each access comes from (TEMP triggers on ``main`` tables).
A connection without them pays nothing.
"""

from __future__ import annotations

from typing import Any

import apsw

from .engine.authorizer import HEADER_PRAGMAS, READ_ACTIONS
from .identifiers import quote

_NEITHER = frozenset({apsw.SQLITE_TRANSACTION, apsw.SQLITE_SAVEPOINT})
_ROW_WRITES = frozenset({apsw.SQLITE_INSERT, apsw.SQLITE_UPDATE, apsw.SQLITE_DELETE})


class Probe:
    """What preparing one statement on the merger showed."""

    __slots__ = ("local", "writes")

    def __init__(self) -> None:
        self.local = False  # it touches something only the merger has
        self.writes = False  # it writes something the other connections share


class ConnectionState:
    """The connection's TEMP objects and attached databases, and where each lives."""

    def __init__(self) -> None:
        # Databases only the merger has: TEMP, and attached in-memory ones (lower case).
        self.local_dbs: set[str] = {"temp"}
        self._local_names: frozenset[str] = frozenset()  # every object in them
        self._local_sources: frozenset[str] = frozenset()  # their triggers and views
        self._triggered: frozenset[str] = frozenset()  # tables with a TEMP trigger on them
        # Attached database files, by name in attachment order: copied to every connection.
        self.files: dict[str, str] = {}
        self.listening = False  # the merger's authorizer feeds ``hear`` (see ``probe``)
        self._probe: Probe | None = None

    @property
    def has_local(self) -> bool:
        """Whether statements must be probed: the merger holds something the others lack."""
        return bool(self._local_names) or len(self.local_dbs) > 1

    def attached(self, name: str, path: str) -> bool:
        """The merger attached ``name`` (``path`` empty: in memory).  Returns whether it is a
        file that the other connections attach too."""
        if path:
            self.files[name] = path
            return True
        self.local_dbs.add(name.lower())
        return False

    def detached(self, name: str) -> str | None:
        """The merger detached ``name``.  Returns the file's path if the other connections
        have it attached too."""
        self.local_dbs.discard(name.lower())
        return self.files.pop(name, None)

    @property
    def has_triggers(self) -> bool:
        """Whether the merger holds TEMP triggers.  SQLite leaves them on where a connection
        turns triggers off (``SQLITE_DBCONFIG_ENABLE_TRIGGER``, since 3.35), as the merger
        does to apply changesets, so it must then apply no rows but this connection's own."""
        return bool(self._triggered)

    def hear(self, action: int, p1: Any, p2: Any, db: Any, source: Any) -> bool:
        """The merger's authorizer, first: ``True`` while probing (SQLite is then told yes)."""
        probe = self._probe
        if probe is None:
            return False
        if action == apsw.SQLITE_ALTER_TABLE:
            db = p1  # ALTER TABLE names the schema first
        local = (
            (db is not None and db.lower() in self.local_dbs)
            # A table read for no column (``count(*)``) comes without its schema.
            or (
                db is None
                and action == apsw.SQLITE_READ
                and (p1 or "").lower() in self._local_names
            )
            or (source is not None and source.lower() in self._local_sources)
            or (
                action == apsw.SQLITE_PRAGMA
                and (
                    (p2 is not None and p2.lower() in self._local_names)
                    or (p1 or "").lower() == "database_list"  # only the merger has them all
                )
            )
            # A table-valued pragma names its table in an argument the authorizer never sees;
            # pragma_database_list lists what only the merger has.
            or (action == apsw.SQLITE_READ and (p1 or "").lower().startswith("pragma_"))
        )
        if local or (action in _ROW_WRITES and p1 is not None and p1.lower() in self._triggered):
            # A write to a table with a TEMP trigger runs where the trigger is: its changes
            # must never reach the merger as a changeset (see ``has_triggers``).
            probe.local = True
        if action in READ_ACTIONS or action in _NEITHER:
            return True
        if action == apsw.SQLITE_PRAGMA and (
            p2 is None or (p1 or "").lower() not in HEADER_PRAGMAS
        ):
            return True  # a pragma query
        if db is None or db.lower() not in self.local_dbs:
            probe.writes = True
        return True

    def probe(self, merger: apsw.Connection, sql: str, parameters: Any) -> Probe | None:
        """Prepare ``sql`` on the merger without running it; ``None`` if its parameters do
        not bind, or SQLite is busy (the statement then fails where it runs, as it would).

        The merger's authorizer must be listening (``listening``, installed by the caller).

        :raises apsw.SQLError: it does not prepare.  The merger holds every schema the
            connection has, so this is the error the stdlib's one connection gives.
        """
        probe = self._probe = Probe()
        cursor = merger.cursor()
        cursor.exec_trace = _stop
        try:
            cursor.execute(sql, parameters, can_cache=False)
        except apsw.ExecTraceAbort:
            return probe
        except apsw.SQLError:
            raise
        except (apsw.Error, KeyError, TypeError, ValueError, OverflowError):
            return None
        finally:
            self._probe = None
            cursor.exec_trace = None
        return probe  # nothing to run (a comment only)

    def refresh(self, merger: apsw.Connection) -> None:
        """Read again what the local databases hold, after a statement may have changed it."""
        names: set[str] = set()
        sources: set[str] = set()
        triggered: set[str] = set()
        # Only those SQLite has opened: reading TEMP's schema would open it, and then
        # ``PRAGMA database_list`` would show it where the stdlib's does not.
        opened = {row[0].lower() for row in merger.execute("SELECT name FROM pragma_database_list")}
        for db in self.local_dbs & opened:
            sql = f"SELECT type, name, tbl_name FROM {quote(db)}.sqlite_master"
            for kind, name, table in merger.execute(sql):
                names.add(name.lower())
                if kind in ("trigger", "view"):
                    sources.add(name.lower())
                if kind == "trigger":
                    triggered.add(table.lower())
        self._local_names = frozenset(names)
        self._local_sources = frozenset(sources)
        self._triggered = frozenset(triggered)


def _stop(*_args: Any) -> bool:
    return False  # prepared and bound is all a probe needs
