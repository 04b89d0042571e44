"""Classifying SQL text the way the stdlib ``sqlite3`` module does.

The stdlib opens an implicit transaction before INSERT, UPDATE, DELETE and REPLACE, judged by the
first keyword after comments and whitespace (CPython Modules/_sqlite/statement.c); we match it.
SQLite itself also passes over empty statements (``;``) and a byte order mark before the first
one, so ``"; BEGIN"`` opens a transaction: what a statement does (begin, commit, a pragma, a
schema change) is judged past those too, while ``"; INSERT ..."`` opens no implicit transaction,
as in the stdlib.
"""

from __future__ import annotations

import functools
import re
from typing import Any, NamedTuple

import apsw

from .errors import DataError, ProgrammingError

_LEADING = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?(?:\*/|$))*", re.S)
# What SQLite passes over before a statement's first token: also empty statements and a BOM.
_LEADING_EMPTY = re.compile(r"(?:[\s;\ufeff]+|--[^\n]*(?:\n|$)|/\*.*?(?:\*/|$))*", re.S)
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

DML = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE"})


def first_keywords(sql: str, count: int = 2, *, past_empty: bool = False) -> list[str]:
    """The first ``count`` keywords of ``sql``, upper case.  ``past_empty``: as SQLite reads
    it, past empty statements and a byte order mark before the first keyword."""
    words: list[str] = []
    pos = 0
    for _ in range(count):
        m = (_LEADING_EMPTY if past_empty and not words else _LEADING).match(sql, pos)
        pos = m.end() if m else pos
        w = _WORD.match(sql, pos)
        if not w:
            break
        words.append(w.group(0).upper())
        pos = w.end()
    return words


@functools.lru_cache(maxsize=2048)
def kind(sql: str) -> str:
    """One of ``begin``, ``commit``, ``rollback``, ``savepoint``, ``release``,
    ``rollback_to``, ``dml``, ``pragma``, ``attach``, ``detach``, ``exclusive`` (VACUUM,
    REINDEX), ``other``."""
    words = first_keywords(sql, 3)
    if words:
        return _kind(words)
    words = first_keywords(sql, 3, past_empty=True)
    found = _kind(words) if words else "other"
    # Behind an empty statement, DML opens no implicit transaction in the stdlib: a write that
    # runs on its own, as any other statement that writes.
    return "other" if found == "dml" else found


def _kind(words: list[str]) -> str:
    head = words[0]
    if head == "BEGIN":
        return "begin"
    if head in ("COMMIT", "END"):
        return "commit"
    if head == "ROLLBACK":
        # ROLLBACK [TRANSACTION] TO [SAVEPOINT] x is a statement inside the transaction, not
        # its end.
        return "rollback_to" if "TO" in words[1:3] else "rollback"
    if head == "RELEASE":
        return "release"
    if head in DML:
        return "dml"
    if head == "SAVEPOINT":
        return "savepoint"
    if head == "PRAGMA":
        return "pragma"
    if head in ("ATTACH", "DETACH"):
        return head.lower()
    if head in ("VACUUM", "REINDEX"):
        # They rewrite pages without asking the authorizer (plain REINDEX never does).
        return "exclusive"
    return "other"


_SCHEMA_WORDS = frozenset({"CREATE", "DROP", "ALTER", "ROLLBACK", "DETACH"})


@functools.lru_cache(maxsize=2048)
def may_change_schema(sql: str) -> bool:
    """Whether ``sql`` may create or drop objects (``ROLLBACK TO`` undoes a ``CREATE``)."""
    words = first_keywords(sql, 1, past_empty=True)
    return bool(words) and words[0] in _SCHEMA_WORDS


_TAIL = re.compile(r"(?:\s+|;|--[^\n]*(?:\n|$)|/\*.*?(?:\*/|$))*", re.S)


@functools.lru_cache(maxsize=2048)
def has_more_statements(sql: str, first: str) -> bool:
    """Whether ``sql`` holds anything but whitespace and comments after statement ``first``."""
    at = sql.find(first)
    if at < 0:
        return False
    rest_start = at + len(first)
    m = _TAIL.match(sql, rest_start)
    return m is not None and m.end() < len(sql)


@functools.lru_cache(maxsize=2048)
def without_unclosed_comment(sql: str) -> str:
    """``sql`` without a trailing unclosed ``/*`` comment after its last statement, which the
    stdlib skips; SQLite would try to prepare it as one more statement (a syntax error) once
    the statements before it have run."""
    at = sql.rfind("/*")
    if at < 0 or "*/" in sql[at + 2 :]:
        return sql
    head = sql[:at]
    return head if apsw.complete(head) else sql


def split(script: str) -> list[str]:
    """The statements of a script, split where SQLite itself would see each one end."""
    out, start = [], 0
    for i, ch in enumerate(script):
        if ch == ";" and apsw.complete(script[start : i + 1]):
            out.append(script[start : i + 1])
            start = i + 1
    if script[start:].strip():
        out.append(script[start:])
    return [s for s in out if first_keywords(s, 1, past_empty=True)]


_NAME = r'"(?:[^"]|"")*"|\[[^\]]*\]|`(?:[^`]|``)*`|[A-Za-z_][A-Za-z0-9_$]*'
_VALUE = rf"""'(?:[^']|'')*'|{_NAME}|[-+]?[A-Za-z0-9_.]+"""
_GAP = r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?(?:\*/|$))*"
_PRAGMA = re.compile(
    rf"(?:{_GAP}[;\ufeff])*{_GAP}PRAGMA{_GAP}(?:(?P<schema>{_NAME}){_GAP}\.{_GAP})?(?P<name>{_NAME}){_GAP}"
    rf"(?:={_GAP}(?P<eq>{_VALUE})|\({_GAP}(?P<call>{_VALUE}){_GAP}\))?(?:{_GAP};)*{_GAP}",
    re.S | re.I,
)


class Pragma(NamedTuple):
    """One PRAGMA statement's parts, unquoted; ``name`` in lower case."""

    schema: str | None
    name: str
    value: str | None


def _unquote(token: str) -> str:
    if token[:1] in ("'", '"', "`") and token[-1:] == token[:1]:
        return token[1:-1].replace(token[0] * 2, token[0])
    if token[:1] == "[" and token[-1:] == "]":
        return token[1:-1]
    return token


@functools.lru_cache(maxsize=512)
def pragma(sql: str) -> Pragma | None:
    """The parts of ``sql`` if it is a single PRAGMA statement (SQLite's syntax:
    ``PRAGMA [schema.]name [= value | (value)]``), else ``None``."""
    m = _PRAGMA.fullmatch(sql)
    if m is None:
        return None
    schema, value = m.group("schema"), m.group("eq") or m.group("call")
    return Pragma(
        None if schema is None else _unquote(schema),
        _unquote(m.group("name")).lower(),
        None if value is None else _unquote(value),
    )


# The kinds (:func:`kind`) of SAVEPOINT, RELEASE and ROLLBACK TO.
SAVEPOINT_KINDS = frozenset({"savepoint", "release", "rollback_to"})


def checked(sql: Any, max_length: int) -> tuple[str, str]:
    """``sql`` as it will run and its kind (:func:`kind`), refused as the stdlib's ``execute``
    refuses it."""
    if not isinstance(sql, str):
        raise TypeError(f"execute() argument 1 must be str, not {type(sql).__name__}")
    if "\0" in sql:
        raise ProgrammingError("the query contains a null character")
    if len(sql) > max_length:
        raise DataError("query string is too large")
    if "/*" in sql:
        sql = without_unclosed_comment(sql)
    return sql, kind(sql)
