"""Adapters and converters, as in the stdlib (PEP 246-style ``adapt`` and ``detect_types``).

Adapters turn Python objects into values SQLite stores; converters turn stored values back into
Python objects, chosen by a column's declared type (``PARSE_DECLTYPES``) or by a ``[type]`` in
its name (``PARSE_COLNAMES``).  Our registries start with the stdlib's defaults (date and
datetime adapters, ``date`` and ``timestamp`` converters) but are our own: registering with one
module does not change the other.
"""

from __future__ import annotations

import re
import sqlite3 as _stdlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .errors import ProgrammingError

PrepareProtocol = _stdlib.PrepareProtocol
PARSE_DECLTYPES = _stdlib.PARSE_DECLTYPES
PARSE_COLNAMES = _stdlib.PARSE_COLNAMES

adapters: dict[tuple[type, Any], Callable[[Any], Any]] = dict(_stdlib.adapters)
converters: dict[str, Callable[[bytes], Any]] = dict(_stdlib.converters)

# Values SQLite takes as they are; checked first so the common case costs one set lookup.
_PLAIN = frozenset({int, float, str, bytes, type(None)})
_plain_adapted = False  # someone registered an adapter for one of the plain types


def register_adapter(type_: type, adapter: Callable[[Any], Any]) -> None:
    global _plain_adapted
    if type_ in _PLAIN:
        _plain_adapted = True
    adapters[(type_, PrepareProtocol)] = adapter


def register_converter(name: str, converter: Callable[[bytes], Any]) -> None:
    """``name`` is matched case-insensitively against declared types and ``[type]`` names."""
    converters[name.upper()] = converter


_MISSING = object()

callback_tracebacks = False  # print exceptions raised in user callbacks (stdlib's flag)


def enable_callback_tracebacks(flag: bool) -> None:
    global callback_tracebacks
    callback_tracebacks = bool(flag)


def adapt(obj: Any, proto: Any = PrepareProtocol, alt: Any = _MISSING) -> Any:
    """The stdlib's ``sqlite3.adapt`` (PEP 246): a registered adapter, else
    ``proto.__adapt__(obj)``, else ``obj.__conform__(proto)``, else ``alt``; without ``alt``,
    ``ProgrammingError``.  As there, ``None`` or a ``TypeError`` from ``__adapt__`` or
    ``__conform__`` means "cannot", and the next way is tried."""
    adapter = adapters.get((type(obj), proto))
    if adapter is not None:
        return adapter(obj)
    ways = ((getattr(proto, "__adapt__", None), obj), (getattr(obj, "__conform__", None), proto))
    for method, arg in ways:
        if method is None:
            continue
        try:
            adapted = method(arg)
        except TypeError:
            continue
        if adapted is not None:
            return adapted
    if alt is not _MISSING:
        return alt
    raise ProgrammingError("can't adapt")


def _adapt_value(value: Any) -> Any:
    if type(value) in _PLAIN and not _plain_adapted:
        return value
    return adapt(value, PrepareProtocol, value)


def adapt_all(parameters: Any, many: bool) -> Any:
    """The parameters of ``execute`` (``many``: of ``executemany``, a list of them), adapted."""
    if not many:
        return adapt_parameters(parameters)
    if not isinstance(parameters, Iterable):
        raise TypeError("executemany() argument 2 must be iterable")
    # A list: a statement that must run again elsewhere needs them again.
    return [adapt_parameters(p) for p in parameters]


def adapt_parameters(parameters: Any) -> Any:
    """Parameters with every adaptable value adapted; unchanged when nothing needs it.

    As in the stdlib, a dict binds by name and anything else must be a sequence, read with
    ``len()`` and indexing (not iteration) once, before the statement runs.
    """
    if isinstance(parameters, dict):
        if not _plain_adapted and _PLAIN.issuperset(map(type, parameters.values())):
            return parameters
        return {k: _adapt_value(v) for k, v in parameters.items()}
    if type(parameters) is not tuple:
        if not hasattr(parameters, "__getitem__") or not hasattr(parameters, "__len__"):
            raise ProgrammingError("parameters are of unsupported type")
        # Read and adapted one by one, as the stdlib binds them: an adapter may change the
        # sequence (an IndexError then, as there).
        return tuple(_adapt_value(parameters[i]) for i in range(len(parameters)))
    # map/issuperset: the check every statement makes, without a generator's frames.
    if not _plain_adapted and _PLAIN.issuperset(map(type, parameters)):
        return parameters
    return tuple(_adapt_value(v) for v in parameters)


_APSW_BINDING = re.compile(r"Bad binding argument type supplied - argument #(\d+): type (\S+)")


def binding_error(error: TypeError) -> ProgrammingError:
    """The stdlib's error for a parameter of a type SQLite cannot store, from APSW's."""
    m = _APSW_BINDING.search(str(error))
    if m is None:
        return ProgrammingError(str(error))
    return ProgrammingError(f"Error binding parameter {m[1]}: type '{m[2]}' is not supported")


_COLNAME_TYPE = re.compile(r"\[([^\]]*)\]")


def column_name(name: str, detect_types: int) -> str:
    """The name ``description`` shows: with ``PARSE_COLNAMES``, cut before `` [type]``."""
    if detect_types & PARSE_COLNAMES:
        at = name.find("[")
        if at >= 0:
            # As CPython does: one space before the bracket goes too, no more.
            return name[: at - 1] if at > 0 and name[at - 1] == " " else name[:at]
    return name


def _decltype_converter(decltype: str | None) -> Callable[[bytes], Any] | None:
    if not decltype:
        return None
    # The first word of the declared type: "timestamp" in "timestamp default now".
    word = re.split(r"[\s(]", decltype.strip(), maxsplit=1)[0]
    return converters.get(word.upper())


def column_converters(
    description: Sequence[tuple[Any, ...]], detect_types: int
) -> list[Callable[[bytes], Any] | None] | None:
    """The converter of each column (``None`` where there is none), or ``None`` for none."""
    if not detect_types:
        return None
    found: list[Callable[[bytes], Any] | None] = []
    for column in description:
        name, decltype = column[0], column[1]
        converter = None
        if detect_types & PARSE_COLNAMES:
            m = _COLNAME_TYPE.search(name)
            if m:
                converter = converters.get(m.group(1).upper())
        if converter is None and detect_types & PARSE_DECLTYPES:
            converter = _decltype_converter(decltype)
        found.append(converter)
    return found if any(found) else None


def _as_bytes(value: Any) -> bytes:
    # The stdlib hands converters sqlite3_column_blob(): the value's text, as bytes.
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, float):
        return _stdlib_float_text(value)
    return str(value).encode()


def _stdlib_float_text(value: float) -> bytes:
    # SQLite renders a REAL as "%!.15g", then with ".0" if that looks like an integer.
    text = f"{value:.15g}"
    if text.lstrip("-").isdigit():
        text += ".0"
    return text.encode()


def convert_row(
    row: tuple[Any, ...],
    convs: list[Callable[[bytes], Any] | None],
    text_factory: Callable[[bytes], Any],
) -> tuple[Any, ...]:
    out = []
    for v, conv in zip(row, convs, strict=True):
        if v is None:
            out.append(None)
        elif conv is not None:
            # The stdlib reads the value with sqlite3_column_blob(), NULL when it is empty.
            out.append(None if v in (b"", "") else conv(_as_bytes(v)))
        elif isinstance(v, str) and text_factory is not str:
            out.append(text_factory(v.encode()))
        else:
            out.append(v)
    return tuple(out)
