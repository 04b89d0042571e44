"""A transaction's private view and what it spills: snapshots read from the WAL, the overlay
VFS, the per-process journal file, and who holds the WAL.  docs/architecture.md, "Layers, top
down"."""
