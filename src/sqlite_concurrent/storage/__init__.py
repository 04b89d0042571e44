"""A transaction's private view and the files beside the database: snapshots read from the WAL,
the overlay VFS, the per-process journal file, who holds the WAL, and making the files we keep
beside the database as SQLite makes its -wal.  docs/architecture.md, "Layers, top down"."""
