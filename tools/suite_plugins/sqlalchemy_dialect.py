"""A pytest plugin that registers the ``sqlite+sqlite_concurrent`` dialect with SQLAlchemy, as
the package's ``sqlalchemy.dialects`` entry point does once it is installed (the suites run
the project from ``src/`` on the path, with no distribution metadata)."""

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    # Only now: SQLAlchemy's conftest puts the sdist's lib/ on the path as pytest loads it.
    from sqlalchemy.dialects import registry

    registry.register("sqlite.sqlite_concurrent", "sqlite_concurrent.sqlalchemy", "dialect")
