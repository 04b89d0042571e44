"""Put sqlite_concurrent in place of ``sqlite3`` in a Python that has not imported it yet.

Shared by the ``tools/`` runners of suites we did not write (``cpython_sqlite3.py``,
``sqlite_utils_suite.py``, ``sqlalchemy_suite.py``, ``django_suite.py``).

Code under test only ever reaches the driver through ``import sqlite3`` /
``from sqlite3 import dbapi2`` and then looks everything up on that module object, so replacing
``sys.modules["sqlite3"]`` before anything imports it is enough.  What is aliased, and why:

* ``sqlite3`` -> ``sqlite_concurrent``: the name everyone imports.  sqlite_concurrent is imported
  first: it does ``import sqlite3 as _stdlib`` itself (and its exceptions subclass the stdlib's),
  so it must bind the real module before the alias hides it.
* ``sqlite3.dbapi2`` -> ``sqlite_concurrent.dbapi2``: the same API under the stdlib's other name
  (Django, SQLAlchemy's pysqlite dialect and sqlite-utils import it); left alone it would
  silently be the stdlib.
* ``sqlite3.dump`` is *not* aliased, but imported (the real one) before the alias: it is the
  stdlib's private iterdump helper, which only the stdlib's C ``Connection.iterdump()`` imports,
  lazily and by name; after the alias that import would search our package instead.
* ``_sqlite3`` is left alone: the package only imports it to skip itself if SQLite is absent.

The alias is installed by a generated ``sitecustomize`` on the ``PYTHONPATH`` of the process
under test rather than by that process's own code, so that every Python a test starts itself
(a CLI under test, a multiprocessing child, a worker of a parallel test runner) gets it too.

``memory_as_file`` makes ``connect(":memory:")`` and ``connect("")`` open a new file instead, in
the directory named by the ``SQLITE_CONCURRENT_MEMORY_DIR`` environment variable: those
databases are private to one connection, so sqlite_concurrent serves them with a plain SQLite
connection, and a suite that only ever uses memory databases would otherwise never reach the
machinery for shared files.  It patches whichever module ``sqlite3`` is at that point, so the
stdlib baseline can run the same way.
"""

from __future__ import annotations

from pathlib import Path

MEMORY_DIR_VARIABLE = "SQLITE_CONCURRENT_MEMORY_DIR"

_SWAP = """\
import sys
import sqlite3 as stdlib_sqlite3  # a runner may lend from it while tests are imported
import sqlite3.dump  # the real one, before the alias hides the stdlib package
import sqlite_concurrent  # before the alias: it imports the real sqlite3 for itself
sys.modules["sqlite3"] = sqlite_concurrent
sys.modules["sqlite3.dbapi2"] = sqlite_concurrent.dbapi2
"""

_MEMORY_AS_FILE = f"""\
def _memory_as_file():
    import itertools
    import os
    import sys
    import sqlite3
    import sqlite3.dbapi2

    directory = os.environ[{MEMORY_DIR_VARIABLE!r}]
    numbers = itertools.count()

    def patch(module):
        real = module.connect

        def connect(database, *args, **kwargs):
            if isinstance(database, str) and database in (":memory:", ""):
                # The pid: files of forked or restarted processes must not collide.
                name = f"memory-{{os.getpid()}}-{{next(numbers)}}.db"
                database = os.path.join(directory, name)
            return real(database, *args, **kwargs)

        module.connect = connect

    for name in ("sqlite3", "sqlite3.dbapi2"):
        patch(sys.modules[name])


_memory_as_file()
del _memory_as_file
"""


def sitecustomize(*, swap: bool, memory_as_file: bool = False) -> str:
    """The text of a ``sitecustomize`` module doing what this module's docstring describes."""
    parts = [_SWAP] if swap else []
    if memory_as_file:
        parts.append(_MEMORY_AS_FILE)
    return "\n".join(parts)


def write_shim(directory: Path, *, swap: bool, memory_as_file: bool = False) -> Path:
    """Write that ``sitecustomize`` into ``directory`` (created); put it first on PYTHONPATH."""
    directory.mkdir(parents=True, exist_ok=True)
    text = sitecustomize(swap=swap, memory_as_file=memory_as_file)
    (directory / "sitecustomize.py").write_text(text)
    return directory
