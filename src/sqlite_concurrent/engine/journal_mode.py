"""``PRAGMA journal_mode`` on a shared database, which is always in WAL mode (architecture.md, "WAL
mode").

Reading the mode, or asking for WAL, answers ``wal`` as SQLite does on a WAL database; asking
for any other mode of the main database is refused, since the machinery that lets processes
write at once needs WAL.  A transaction's own connection runs in MEMORY journal mode
(architecture.md, "The overlay VFS"), so the question is never put to it.
"""

from __future__ import annotations

from .. import statements

# SQLite's journal modes (pragma.c, azModeName); any other value only reads the mode.
MODES = frozenset({"delete", "persist", "off", "truncate", "memory", "wal"})


def requested(sql: str) -> str | None:
    """The mode ``sql`` asks of the main database: ``"wal"`` for a plain read (or a value SQLite
    does not know, which it takes as one), another mode's name to switch to it, or ``None``
    when ``sql`` is not a journal_mode pragma on the main database (nor on all of them)."""
    found = statements.pragma(sql)
    if found is None or found.name != "journal_mode":
        return None
    if found.schema is not None and found.schema.lower() != "main":
        return None
    mode = "wal" if found.value is None else found.value.lower()
    return mode if mode in MODES else "wal"


def keeps_wal(value: str | None) -> bool:
    """Whether a pragma value (as SQLite hands it to the authorizer) leaves a WAL database so."""
    return value is None or value.lower() not in MODES or value.lower() == "wal"


def refusal(mode: str) -> str:
    return (
        f"PRAGMA journal_mode={mode.upper()} is not supported: sqlite_concurrent keeps the "
        "database in WAL mode, which its concurrent writers need"
    )
