"""Running a transaction again instead of failing it (docs/architecture.md, "Ways to run a
transaction").

An optimistic transaction whose merge conflicts would fail with ``ConflictError``, where stock
SQLite, which runs one writer at a time, would have run it after the other writer and
succeeded.  If the application saw nothing the transaction read or did (no row fetched, no
``rowcount``, ``lastrowid`` or ``total_changes`` read, no error from one of its statements, no
blob or serialized copy taken), nothing it holds depends on the snapshot the transaction ran
on.  So it is run again, statement by statement with the same parameters, on the latest
database under the merge lock (directly, :mod:`.ways`), with its triggers and user functions,
as stock SQLite would have run it at that moment; then committed.  Its cursors then show
what the new run gave (the rows of a query not yet fetched, ``rowcount``, ``lastrowid``).

This generalises the blind-insert rebase (:mod:`.rebase`), which gives rows whose rowid was not
observed a fresh one: here the whole transaction is unobserved, so all of it may move.

The recording is a :class:`Script` of statements, which the connection drops at the first
observation the cursor or the connection reports.  Only queries and DML are recorded: a
savepoint, a pragma or anything run another way makes the transaction one that cannot be run
again, and it conflicts as before.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

from .. import errors

# Statement kinds (:func:`.statements.kind`) a transaction may run and still be run again.
KINDS = frozenset({"dml", "other"})
# Parameter sets a recording keeps at most: a bulk load's would hold every row in memory until
# its commit (it then conflicts as before, if it conflicts).
MAX_PARAMETER_SETS = 10_000
_MUTABLE = (bytearray, memoryview)


@dataclass(eq=False)
class Statement:
    """One statement as the application ran it, and the cursor that shows its results."""

    cursor: weakref.ref[Any]
    sql: str
    parameters: Any
    many: bool
    kind: str


@dataclass
class Script:
    """The statements of one optimistic transaction, in order, while nothing was observed."""

    statements: list[Statement] = field(default_factory=list)
    changes: int = 0  # rows they changed, counted in the connection's total_changes
    wrote: bool = False  # a DML statement is among them
    last_insert_rowid: int = 0  # the connection's when the transaction began
    parameter_sets: int = 0

    def record(
        self, cursor: Any, sql: str, parameters: Any, many: bool, kind: str
    ) -> Statement | None:
        """The statement as recorded; ``None`` if the recording has grown too large to keep."""
        self.parameter_sets += len(parameters) if many else 1
        if self.parameter_sets > MAX_PARAMETER_SETS:
            return None
        statement = Statement(weakref.ref(cursor), sql, _frozen(parameters, many), many, kind)
        self.statements.append(statement)
        self.wrote = self.wrote or kind == "dml"
        return statement


def _frozen(parameters: Any, many: bool) -> Any:
    """The parameters as bound now: the application may change its dict or buffer later."""
    if many:
        return [_frozen(p, False) for p in parameters]
    if isinstance(parameters, dict):
        return {k: bytes(v) if isinstance(v, _MUTABLE) else v for k, v in parameters.items()}
    if any(isinstance(v, _MUTABLE) for v in parameters):
        return tuple(bytes(v) if isinstance(v, _MUTABLE) else v for v in parameters)
    return parameters


def naming(error: errors.Error, sql: str) -> errors.Error:
    """``error``, which running ``sql`` again raised, as its own class, naming the statement."""
    try:
        named = type(error)(f"{error} (running again at commit, after a conflict: {sql})")
    except TypeError:  # a class of ours that wants more than a message
        return error
    for attribute in ("sqlite_errorcode", "sqlite_errorname"):
        if hasattr(error, attribute):
            setattr(named, attribute, getattr(error, attribute))
    return named
