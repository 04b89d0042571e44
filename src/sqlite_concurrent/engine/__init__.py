"""Statements and transactions: the database file as a connection shares it, how each
transaction runs (direct, optimistic, escalated, replayed), the life of an optimistic one,
exclusive operations, the rowid rebase, and recovery after dead processes.
docs/architecture.md, "Layers, top down"."""
