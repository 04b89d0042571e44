"""``Row``: the stdlib's ``sqlite3.Row`` for our cursors (the stdlib's only accepts its own)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from .cursor import Cursor


class Row:
    """A result row readable by index, by column name (case-insensitive) and as a sequence.

    Use as ``conn.row_factory = sqlite_concurrent.Row``.
    """

    __slots__ = ("_names", "_values")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Checked as the stdlib checks them: by the real type, which ``__class__`` cannot fake.
        if kwargs:
            raise TypeError("Row() takes no keyword arguments")
        if len(args) != 2:
            raise TypeError(f"Row expected 2 arguments, got {len(args)}")
        cursor, values = args
        if not issubclass(type(cursor), Cursor):
            raise TypeError(
                f"Row() argument 1 must be sqlite_concurrent.Cursor, not {type(cursor).__name__}"
            )
        if not issubclass(type(values), tuple):
            raise TypeError(f"Row() argument 2 must be tuple, not {type(values).__name__}")
        description = cursor.description or ()
        self._names = tuple(d[0] for d in description)
        self._values = tuple(values)

    def keys(self) -> list[str]:
        return list(self._names)

    def __getitem__(self, key: int | str | slice) -> Any:
        if isinstance(key, str):
            # Case-insensitive for ASCII letters only, as SQLite and the stdlib compare names.
            folded = _ascii_lower(key)
            for i, name in enumerate(self._names):
                if _ascii_lower(name) == folded:
                    return self._values[i]
            raise IndexError("No item with that key")
        if not isinstance(key, (int, slice)) and not hasattr(key, "__index__"):
            raise IndexError("Index must be int or string")
        return self._values[key]

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Row):
            return NotImplemented
        return self._names == other._names and self._values == other._values

    def __hash__(self) -> int:
        return hash(self._names) ^ hash(self._values)


def _ascii_lower(text: str) -> str:
    return text.translate(_ASCII_LOWER)


_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}
Sequence.register(Row)
