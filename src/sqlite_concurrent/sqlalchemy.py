"""A SQLAlchemy dialect: ``create_engine("sqlite+sqlite_concurrent:///app.db")``.

SQLAlchemy's pysqlite dialect with :mod:`sqlite_concurrent` as its DB-API module, registered
through the ``sqlalchemy.dialects`` entry point.  Everything else (pooling, isolation levels,
type handling) is the pysqlite dialect's.
"""

from __future__ import annotations

from types import ModuleType

from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite


class SQLiteDialect_sqlite_concurrent(SQLiteDialect_pysqlite):  # noqa: N801 (SQLAlchemy's naming)
    driver = "sqlite_concurrent"
    supports_statement_cache = True

    @classmethod
    def load_provisioning(cls) -> None:
        # SQLAlchemy's test harness looks for provisioning beside the dialect's module; ours
        # is the SQLite dialect's.
        SQLiteDialect_pysqlite.load_provisioning()

    @classmethod
    def import_dbapi(cls) -> ModuleType:
        from . import dbapi2

        return dbapi2


dialect = SQLiteDialect_sqlite_concurrent
