"""What this process holds for each database and when it lets go: the files beside it (made as
SQLite makes -wal, removed at the last close), the guards that keep other openers in the process
off our files, and closing at exit.  docs/architecture.md, "Files beside app.db"."""
