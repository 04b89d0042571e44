"""Getting a transaction into the database: validating and applying its changeset under the
merge lock (group commit, commit markers), applying small changesets as statements, and keeping
the WAL bounded.  docs/architecture.md, "A commit, straight down"."""
