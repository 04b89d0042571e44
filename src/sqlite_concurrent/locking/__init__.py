"""Locks between processes: the lock database, grants and deadlock detection, the lock levels
as policies, row locks made visible, blocking waits, kernel locks, and telling a live process
from a dead one.  docs/architecture.md, "Locks and waiting"."""
