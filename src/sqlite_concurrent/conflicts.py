"""The :class:`ConflictError` each kind of conflict raises, with a message that says which row and
why; raised by the locks a statement waits on as by the merge that validates a commit.
"""

from __future__ import annotations

from typing import Any

from .errors import ConflictError

_DESCRIPTIONS = {
    "data": "was changed by another transaction since this one began",
    "notfound": "was deleted by another transaction since this one began",
    "conflict": "was inserted by another transaction with the same key",
    "constraint": "would violate a constraint given another transaction's changes",
    "foreign_key": "would violate a foreign key given another transaction's changes",
}


def conflict(table: str | None, key: tuple[Any, ...] | None, kind: str) -> ConflictError:
    what = f"row {key!r} of table {table!r}" if table else "the database"
    detail = _DESCRIPTIONS.get(kind, kind)
    return ConflictError(
        f"conflict: {what} {detail}; the transaction was rolled back (retry it)",
        table=table,
        key=key,
        kind=kind,
    )
