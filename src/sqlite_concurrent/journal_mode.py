"""``PRAGMA journal_mode`` on a shared database, which is always in WAL mode (DESIGN 14).

Reading the mode, or asking for WAL, answers ``wal`` as SQLite does on a WAL database; asking
for any other mode of the main database is refused, since the machinery that lets processes
write at once needs WAL.  A transaction's own connection runs in MEMORY journal mode (DESIGN 7),
so the question is never put to it.
"""

from __future__ import annotations

import functools
import re

# SQLite's journal modes (pragma.c, azModeName); any other value only reads the mode.
MODES = frozenset({"delete", "persist", "off", "truncate", "memory", "wal"})

_NAME = r'"(?:[^"]|"")*"|\[[^\]]*\]|`(?:[^`]|``)*`|[A-Za-z_][A-Za-z0-9_$]*'
_VALUE = r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|[-+]?[A-Za-z0-9_.]+"""
_GAP = r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?(?:\*/|$))*"
_PRAGMA = re.compile(
    rf"{_GAP}PRAGMA{_GAP}(?:(?P<schema>{_NAME}){_GAP}\.{_GAP})?journal_mode{_GAP}"
    rf"(?:={_GAP}(?P<eq>{_VALUE})|\({_GAP}(?P<call>{_VALUE}){_GAP}\))?(?:{_GAP};)*{_GAP}",
    re.I | re.S,
)


def _unquote(token: str) -> str:
    if token[:1] in ("'", '"', "`") and token[-1:] == token[:1]:
        return token[1:-1].replace(token[0] * 2, token[0])
    if token[:1] == "[" and token[-1:] == "]":
        return token[1:-1]
    return token


@functools.lru_cache(maxsize=256)
def requested(sql: str) -> str | None:
    """The mode ``sql`` asks of the main database: ``"wal"`` for a plain read (or a value SQLite
    does not know, which it takes as one), another mode's name to switch to it, or ``None``
    when ``sql`` is not a journal_mode pragma on the main database (nor on all of them)."""
    m = _PRAGMA.fullmatch(sql)
    if m is None:
        return None
    schema = m.group("schema")
    if schema is not None and _unquote(schema).lower() != "main":
        return None
    value = m.group("eq") or m.group("call")
    mode = _unquote(value).lower() if value is not None else "wal"
    return mode if mode in MODES else "wal"


def keeps_wal(value: str | None) -> bool:
    """Whether a pragma value (as SQLite hands it to the authorizer) leaves a WAL database so."""
    return value is None or value.lower() not in MODES or value.lower() == "wal"


def refusal(mode: str) -> str:
    return (
        f"PRAGMA journal_mode={mode.upper()} is not supported: sqlite_concurrent keeps the "
        "database in WAL mode, which its concurrent writers need"
    )
