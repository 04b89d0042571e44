"""Test databases for the sqlite_concurrent Django backend."""

from __future__ import annotations

from django.db.backends.sqlite3.creation import DatabaseCreation as _DjangoCreation


class DatabaseCreation(_DjangoCreation):
    def _clone_test_db(self, suffix: str, verbosity: int, keepdb: bool = False) -> None:
        # Django clones a file database by copying the file.  The database is in WAL mode, so
        # commits still in the WAL would be missing from the copy; once the process's last
        # connection to it closes, the main file holds everything (the connection reopens
        # when next used).
        if not self.is_in_memory_db(self.connection.settings_dict["NAME"]):
            self.connection.close()
        super()._clone_test_db(suffix, verbosity, keepdb)
