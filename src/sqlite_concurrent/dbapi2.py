"""The DB-API module under the stdlib's other name for it, ``sqlite3.dbapi2``.

Django, SQLAlchemy's pysqlite dialect and sqlite-utils import the driver as
``from sqlite3 import dbapi2``; with this module swapped in for ``sqlite3`` they get ours.  Every
name is the package's own object, so ``except dbapi2.IntegrityError`` catches what the package
raises.
"""

from __future__ import annotations

from . import *  # noqa: F403
from . import __all__ as _package_all

__all__ = list(_package_all)
