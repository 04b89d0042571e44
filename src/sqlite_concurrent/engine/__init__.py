"""Statements and transactions: how each transaction runs (direct, optimistic, escalated,
replayed), the life of an optimistic one, exclusive operations, and the rowid rebase.
docs/architecture.md, "Layers, top down"."""
