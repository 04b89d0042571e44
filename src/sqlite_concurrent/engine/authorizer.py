"""Authorizer callbacks that keep each statement on a connection that can run it correctly.

A transaction connection only records row changes (a session), so a statement whose effect a
changeset cannot carry must not run there; a stock reader must not write behind the merge lock.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import apsw

from . import journal_mode

READ_ACTIONS = frozenset(
    {apsw.SQLITE_READ, apsw.SQLITE_SELECT, apsw.SQLITE_FUNCTION, apsw.SQLITE_RECURSIVE}
)
_ROW_WRITES = frozenset({apsw.SQLITE_INSERT, apsw.SQLITE_UPDATE, apsw.SQLITE_DELETE})
_SCHEMA_TABLES = frozenset({"sqlite_master", "sqlite_schema", "sqlite_temp_master"})
# Pragmas that change the database file itself rather than the connection.
HEADER_PRAGMAS = frozenset(
    {
        "user_version",
        "application_id",
        "journal_mode",
        "page_size",
        "auto_vacuum",
        "incremental_vacuum",
        "wal_checkpoint",
        "schema_version",
        "encoding",
        "optimize",
    }
)


# Pragmas that only change the connection they run on; replayed on every connection we hold.
CONNECTION_PRAGMAS = frozenset(
    {
        "automatic_index",
        "busy_timeout",
        "cache_size",
        "cache_spill",
        "case_sensitive_like",
        "cell_size_check",
        "foreign_keys",
        "full_column_names",
        "ignore_check_constraints",
        "legacy_alter_table",
        "query_only",
        "recursive_triggers",
        "reverse_unordered_selects",
        "short_column_names",
        "synchronous",
        "trusted_schema",
    }
)


class Denied:
    """Records why the last preparation was refused; ``muted`` while our own machinery
    prepares statements (a session taking its changeset), which nobody needs to vet."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.muted = False

    @contextlib.contextmanager
    def muting(self) -> Iterator[None]:
        self.muted = True
        try:
            yield
        finally:
            self.muted = False


def in_transaction(denied: Denied, report: Any = None):
    """Allow row reads and writes; refuse DDL and header-writing pragmas.

    ``report(action, table, db, None)``, if given, hears of every table read or written.
    """

    def authorize(
        action: int, p1: str | None, p2: str | None, db: str | None, trigger: str | None
    ) -> int:
        if denied.muted:
            return apsw.SQLITE_OK
        if action in READ_ACTIONS or action in _ROW_WRITES:
            if action in _ROW_WRITES and p1 in _SCHEMA_TABLES:
                denied.reason = "a schema change"
                return apsw.SQLITE_DENY
            if action in _ROW_WRITES and db not in (None, "main"):
                # Attached here for reading; only the merger writes it (see connstate).
                denied.reason = "a write to an attached database"
                return apsw.SQLITE_DENY
            if report is not None:
                # For a function p2 is its name (last_insert_rowid() observes inserted rowids).
                report(action, p2 if action == apsw.SQLITE_FUNCTION else p1, db, None)
            return apsw.SQLITE_OK
        if action in (apsw.SQLITE_TRANSACTION, apsw.SQLITE_SAVEPOINT):
            return apsw.SQLITE_OK
        if action == apsw.SQLITE_PRAGMA:
            if p2 is not None and (p1 or "").lower() in HEADER_PRAGMAS:
                denied.reason = f"PRAGMA {p1} with a value"
                return apsw.SQLITE_DENY
            return apsw.SQLITE_OK
        denied.reason = "a schema change or database-wide operation"
        return apsw.SQLITE_DENY

    return authorize


def read_only(denied: Denied):
    """Allow reads and pragma queries; refuse anything that writes."""

    def authorize(
        action: int, p1: str | None, p2: str | None, db: str | None, trigger: str | None
    ) -> int:
        if action in READ_ACTIONS or denied.muted:
            return apsw.SQLITE_OK
        if action == apsw.SQLITE_PRAGMA and (
            p2 is None
            or (p1 or "").lower() not in HEADER_PRAGMAS
            or (
                (p1 or "").lower() == "journal_mode"
                and db in (None, "main")
                and journal_mode.keeps_wal(p2)
            )
        ):
            return apsw.SQLITE_OK
        denied.reason = "write"
        return apsw.SQLITE_DENY

    return authorize
