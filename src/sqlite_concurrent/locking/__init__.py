"""Locks between processes: the lock database with its grants (deadlock detection included)
and commit queue, reaping dead holders, the lock levels as policies, row locks made visible,
blocking waits, kernel locks, and telling a live process from a dead one.
docs/architecture.md, "Locks and waiting"."""
