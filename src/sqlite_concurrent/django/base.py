"""Django's sqlite3 ``DatabaseWrapper`` on sqlite_concurrent connections."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from itertools import tee
from typing import Any

from django.db.backends.sqlite3 import base as _django_sqlite3

from .. import dbapi2 as Database  # noqa: N812 (the name Django uses)
from .creation import DatabaseCreation

# Django registers its adapters and converters (bool, date, datetime, Decimal, ...) with the
# stdlib module as it imports its backend; sqlite_concurrent keeps a registry of its own.
for _name, _converter in sqlite3.converters.items():
    Database.register_converter(_name, _converter)
for (_type, _protocol), _adapter in sqlite3.adapters.items():
    if _protocol is sqlite3.PrepareProtocol:
        Database.register_adapter(_type, _adapter)


class SQLiteCursorWrapper(Database.Cursor):
    """Django's "format"/"pyformat" parameter styles, converted by Django's own function
    (``SQLiteCursorWrapper.convert_query`` of its sqlite3 backend)."""

    convert_query = _django_sqlite3.SQLiteCursorWrapper.convert_query

    def execute(self, query: str, params: Any = None) -> Any:
        if params is None:
            return super().execute(query)
        names = list(params) if isinstance(params, Mapping) else None
        return super().execute(self.convert_query(query, param_names=names), params)

    def executemany(self, query: str, param_list: Any) -> Any:
        peek, param_list = tee(iter(param_list))  # a generator must not lose its first item
        first = next(peek, None)
        names = list(first) if first and isinstance(first, Mapping) else None
        return super().executemany(self.convert_query(query, param_names=names), param_list)


class DatabaseWrapper(_django_sqlite3.DatabaseWrapper):
    Database = Database
    creation_class = DatabaseCreation

    def get_connection_params(self) -> dict[str, Any]:
        params = super().get_connection_params()
        # Django's get_new_connection calls the stdlib's connect(), which makes the connection
        # with this factory: ours, opened with the same arguments.
        params.setdefault("factory", Database.Connection)
        return params

    def create_cursor(self, name: str | None = None) -> SQLiteCursorWrapper:
        return self.connection.cursor(factory=SQLiteCursorWrapper)
