"""What this process holds for each database and when it lets go: removing the files beside it
after its last user, the guards that keep other openers in the process off our files, and
closing at exit.  docs/architecture.md, "Layers, top down"."""
