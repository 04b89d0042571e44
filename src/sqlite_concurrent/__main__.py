"""``python -m sqlite_concurrent`` runs the command line."""

from .cli.app import app

# Spawned writer processes import this module as __mp_main__; only the real run starts the app.
if __name__ == "__main__":
    app(prog_name="sqlite-concurrent")
