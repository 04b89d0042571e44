"""The three lock levels as policies: what each one locks, when, and what its merge checks.

Code that behaves differently per level asks the level (``txn.level.locks_rows``) instead of
comparing names, so what a level does is written once, here.  What the locks are and how they
are taken is :mod:`.locks`; the architecture document's "Lock levels" section says why each
level is what it is.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Level:
    """One lock level."""

    name: str
    # Before each statement: every table it reads (S) or writes (X) is locked for the rest of
    # the transaction, and the tables' versions tell whether its snapshot is stale.
    locks_tables: bool
    # After each statement: the rows it wrote are X-locked (escalating to the table past a
    # threshold).  Such a transaction waits for nothing until it writes, so it shows in the
    # lock database only from its first lock on.
    locks_rows: bool
    # At merge: the pages it read must not have changed since its snapshot, so the snapshot
    # stays pinned until the merge is done.
    validates_pages: bool

    @property
    def registers_at_begin(self) -> bool:
        return not self.locks_rows

    @property
    def autocommit_fast_path(self) -> bool:
        """Whether a lone autocommit statement may run directly on the merger.  Not at the
        table level: its readers hold table locks that such a statement would ignore."""
        return not self.locks_tables

    def __str__(self) -> str:
        return self.name


TABLE = Level("table", locks_tables=True, locks_rows=False, validates_pages=False)
PAGE = Level("page", locks_tables=False, locks_rows=False, validates_pages=True)
ROW = Level("row", locks_tables=False, locks_rows=True, validates_pages=False)

NAMES = ("table", "page", "row")
_BY_NAME = {level.name: level for level in (TABLE, PAGE, ROW)}


def named(name: str) -> Level:
    """The level called ``name``.

    :raises ValueError: no level has that name.
    """
    try:
        return _BY_NAME[name]
    except (KeyError, TypeError):
        raise ValueError(f"lock_level must be one of {', '.join(NAMES)}, not {name!r}") from None
