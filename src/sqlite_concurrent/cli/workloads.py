"""The stress workloads: each one's tables, one transaction, and the invariant it must keep.

Every table a workload uses is named ``stress_*``; a run drops and recreates them, and never
touches any other table.  A transaction is a :class:`Step` chosen by the writer, executed by
:meth:`Workload.execute` inside a transaction the engine opened (``transact()`` for ours,
``BEGIN IMMEDIATE`` for stock), with ``think`` seconds of work (a sleep, standing in for
application code) between its reads and its writes.  ``execute`` returns a tally, which the
writer adds to its own only once the transaction has committed; the invariant compares the
database with the tallies of every writer.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

ROWS_PER_WRITER = 4
INITIAL_BALANCE = 1000


@dataclass(frozen=True)
class Step:
    """One transaction to run: ``kind`` names what it does; ``writes`` is False for reads."""

    kind: str
    args: tuple[Any, ...]
    writes: bool = True


def _simulate_work(think: float) -> None:
    """The application's work inside a transaction (``--think-ms``), simulated.  Not a wait for
    anything: the library's own waits block in the kernel (architecture.md, "Locks and waiting")."""
    if think > 0:
        time.sleep(think)


def _sum_tallies(reports: list[dict[str, Any]]) -> Counter[str]:
    total: Counter[str] = Counter()
    for report in reports:
        total.update(report["tally"])
    return total


class Workload:
    """Base class: subclasses set ``name`` and ``summary`` and implement the four steps."""

    name = ""
    summary = ""

    def create(self, conn: Any, writers: int, accounts: int) -> None:
        """Drop and recreate this workload's tables (stdlib connection, open transaction)."""
        raise NotImplementedError

    def choose(self, rng: random.Random, index: int, tally: Counter[str], accounts: int) -> Step:
        raise NotImplementedError

    def execute(self, conn: Any, step: Step, think: float) -> dict[str, int]:
        raise NotImplementedError

    def check(self, conn: Any, reports: list[dict[str, Any]], accounts: int) -> str:
        """Return ``""`` if the invariant holds, else a one-line description of what broke."""
        raise NotImplementedError


class Ingest(Workload):
    """Insert one row into one shared table: rowids are auto-assigned, every writer appends."""

    name = "ingest"
    summary = "each transaction inserts one row into one shared table"

    def create(self, conn: Any, writers: int, accounts: int) -> None:
        conn.execute("DROP TABLE IF EXISTS stress_events")
        conn.execute(
            "CREATE TABLE stress_events (id INTEGER PRIMARY KEY, writer INT NOT NULL, "
            "seq INT NOT NULL, payload TEXT NOT NULL)"
        )

    def choose(self, rng: random.Random, index: int, tally: Counter[str], accounts: int) -> Step:
        # seq numbers this writer's committed rows 0, 1, 2, ...: a retry reuses its seq.
        return Step("insert", (index, tally["rows"], f"{rng.getrandbits(64):016x}"))

    def execute(self, conn: Any, step: Step, think: float) -> dict[str, int]:
        _simulate_work(think)
        conn.execute("INSERT INTO stress_events (writer, seq, payload) VALUES (?, ?, ?)", step.args)
        return {"rows": 1}

    def check(self, conn: Any, reports: list[dict[str, Any]], accounts: int) -> str:
        return _check_events(conn, {r["index"]: r["tally"].get("rows", 0) for r in reports})


def _check_events(conn: Any, expected: dict[int, int]) -> str:
    """Each writer's rows in stress_events are exactly seq 0..commits-1, once each."""
    found = {
        writer: (n, distinct, top)
        for writer, n, distinct, top in conn.execute(
            "SELECT writer, count(*), count(DISTINCT seq), max(seq) FROM stress_events "
            "GROUP BY writer"
        )
    }
    wrong = []
    for writer, commits in sorted(expected.items()):
        n, distinct, top = found.pop(writer, (0, 0, None))
        want_top = commits - 1 if commits else None
        if not (n == distinct == commits and top == want_top):
            wrong.append(f"writer {writer} has {n} rows ({distinct} distinct), committed {commits}")
    wrong.extend(f"rows from unknown writer {w}" for w in found)
    return "; ".join(wrong[:3])


def _read_think_write(conn: Any, table: str, column: str, row: int, think: float) -> None:
    """Read a counter, work, and write back what was read plus one: a lost update shows."""
    (value,) = conn.execute(f"SELECT {column} FROM {table} WHERE id=?", (row,)).fetchone()
    _simulate_work(think)
    conn.execute(f"UPDATE {table} SET {column}=? WHERE id=?", (value + 1, row))


def _check_counts(
    conn: Any, reports: list[dict[str, Any]], table: str, column: str, name: str
) -> str:
    """Each row's counter equals the increments the writers reported committing."""
    expected = _sum_tallies(reports)
    wrong = [
        f"{name} {row} = {value}, commits reported {expected[f'row:{row}']}"
        for row, value in conn.execute(f"SELECT id, {column} FROM {table} ORDER BY id")
        if value != expected[f"row:{row}"]
    ]
    return "; ".join(wrong[:3])


class Disjoint(Workload):
    """Read then update a row only this writer owns: nothing conflicts, pure parallelism."""

    name = "disjoint"
    summary = "each transaction reads and increments a row only its writer owns"
    table = "stress_counters"

    def create(self, conn: Any, writers: int, accounts: int) -> None:
        conn.execute(f"DROP TABLE IF EXISTS {self.table}")
        conn.execute(f"CREATE TABLE {self.table} (id INTEGER PRIMARY KEY, writer INT, value INT)")
        conn.executemany(
            f"INSERT INTO {self.table} VALUES (?, ?, 0)",
            [(w * ROWS_PER_WRITER + i, w) for w in range(writers) for i in range(ROWS_PER_WRITER)],
        )

    def choose(self, rng: random.Random, index: int, tally: Counter[str], accounts: int) -> Step:
        return Step("update", (index * ROWS_PER_WRITER + rng.randrange(ROWS_PER_WRITER),))

    def execute(self, conn: Any, step: Step, think: float) -> dict[str, int]:
        (row,) = step.args
        _read_think_write(conn, self.table, "value", row, think)
        return {f"row:{row}": 1}

    def check(self, conn: Any, reports: list[dict[str, Any]], accounts: int) -> str:
        return _check_counts(conn, reports, self.table, "value", "row")


class OwnTable(Workload):
    """Like disjoint, but each writer has a table of its own (``stress_own_<writer>``)."""

    name = "owntable"
    summary = "each writer reads and increments rows of a table of its own"

    def create(self, conn: Any, writers: int, accounts: int) -> None:
        old = conn.execute(
            "SELECT name FROM sqlite_schema WHERE type='table' AND name GLOB 'stress_own_[0-9]*'"
        ).fetchall()
        for (name,) in old:
            conn.execute(f'DROP TABLE "{name}"')
        for w in range(writers):
            conn.execute(f"CREATE TABLE stress_own_{w} (id INTEGER PRIMARY KEY, value INT)")
            conn.executemany(
                f"INSERT INTO stress_own_{w} VALUES (?, 0)", [(i,) for i in range(ROWS_PER_WRITER)]
            )

    def choose(self, rng: random.Random, index: int, tally: Counter[str], accounts: int) -> Step:
        return Step("update", (index, rng.randrange(ROWS_PER_WRITER)))

    def execute(self, conn: Any, step: Step, think: float) -> dict[str, int]:
        writer, row = step.args
        _read_think_write(conn, f"stress_own_{int(writer)}", "value", row, think)
        return {f"row:{row}": 1}

    def check(self, conn: Any, reports: list[dict[str, Any]], accounts: int) -> str:
        wrong = []
        for report in reports:
            table = f"stress_own_{report['index']}"
            for row, value in conn.execute(f"SELECT id, value FROM {table}"):
                want = report["tally"].get(f"row:{row}", 0)
                if value != want:
                    wrong.append(f"{table} row {row} = {value}, commits reported {want}")
        return "; ".join(wrong[:3])


def _create_accounts(conn: Any, accounts: int) -> None:
    conn.execute("DROP TABLE IF EXISTS stress_accounts")
    conn.execute("CREATE TABLE stress_accounts (id INTEGER PRIMARY KEY, balance INT NOT NULL)")
    conn.executemany(
        "INSERT INTO stress_accounts VALUES (?, ?)", [(i, INITIAL_BALANCE) for i in range(accounts)]
    )


def _transfer(conn: Any, args: tuple[Any, ...], think: float) -> None:
    # Balances are written as computed from what was read, so a lost update changes the sum.
    a, b, amount = args
    (bal_a,) = conn.execute("SELECT balance FROM stress_accounts WHERE id=?", (a,)).fetchone()
    (bal_b,) = conn.execute("SELECT balance FROM stress_accounts WHERE id=?", (b,)).fetchone()
    _simulate_work(think)
    conn.execute("UPDATE stress_accounts SET balance=? WHERE id=?", (bal_a - amount, a))
    conn.execute("UPDATE stress_accounts SET balance=? WHERE id=?", (bal_b + amount, b))


def _transfer_step(rng: random.Random, accounts: int) -> Step:
    a, b = rng.sample(range(accounts), 2)
    return Step("transfer", (a, b, rng.randint(1, 100)))


def _check_sum(conn: Any, accounts: int) -> str:
    (total,) = conn.execute("SELECT sum(balance) FROM stress_accounts").fetchone()
    want = accounts * INITIAL_BALANCE
    return "" if total == want else f"sum of balances {total}, expected {want}"


class Transfer(Workload):
    """Move money between two random accounts; the total must not change."""

    name = "transfer"
    summary = "each transaction moves money between two random accounts; the sum must hold"

    def create(self, conn: Any, writers: int, accounts: int) -> None:
        _create_accounts(conn, accounts)

    def choose(self, rng: random.Random, index: int, tally: Counter[str], accounts: int) -> Step:
        return _transfer_step(rng, accounts)

    def execute(self, conn: Any, step: Step, think: float) -> dict[str, int]:
        _transfer(conn, step.args, think)
        return {"transfers": 1}

    def check(self, conn: Any, reports: list[dict[str, Any]], accounts: int) -> str:
        return _check_sum(conn, accounts)


class Mixed(Workload):
    """Half reads of the total balance, 30% transfers, 20% inserts into a shared table.

    Every read checks that the total it saw is the right one, so a read of a torn snapshot
    breaks the invariant too.
    """

    name = "mixed"
    summary = "50% read the sum of all balances, 30% transfer, 20% insert into a shared table"

    def create(self, conn: Any, writers: int, accounts: int) -> None:
        _create_accounts(conn, accounts)
        Ingest().create(conn, writers, accounts)

    def choose(self, rng: random.Random, index: int, tally: Counter[str], accounts: int) -> Step:
        roll = rng.random()
        if roll < 0.5:
            return Step("read", (), writes=False)
        if roll < 0.8:
            return _transfer_step(rng, accounts)
        return Step("insert", (index, tally["rows"], f"{rng.getrandbits(64):016x}"))

    def execute(self, conn: Any, step: Step, think: float) -> dict[str, int]:
        if step.kind == "read":
            (total, n) = conn.execute(
                "SELECT sum(balance), count(*) FROM stress_accounts"
            ).fetchone()
            _simulate_work(think)
            return {"reads": 1, "bad_reads": int(total != n * INITIAL_BALANCE)}
        if step.kind == "transfer":
            _transfer(conn, step.args, think)
            return {"transfers": 1}
        return Ingest().execute(conn, step, think)

    def check(self, conn: Any, reports: list[dict[str, Any]], accounts: int) -> str:
        problems = [_check_sum(conn, accounts)]
        bad = _sum_tallies(reports)["bad_reads"]
        if bad:
            problems.append(f"{bad} reads saw a wrong sum of balances")
        problems.append(
            _check_events(conn, {r["index"]: r["tally"].get("rows", 0) for r in reports})
        )
        return "; ".join(p for p in problems if p)


HOT_ROWS = 2


class HotCounter(Workload):
    """``UPDATE ... SET n = n + 1`` on one of two hot rows: the most common write there is."""

    name = "counter"
    summary = "each transaction increments one of two counters every writer shares"
    table = "stress_hot"

    def create(self, conn: Any, writers: int, accounts: int) -> None:
        conn.execute(f"DROP TABLE IF EXISTS {self.table}")
        conn.execute(f"CREATE TABLE {self.table} (id INTEGER PRIMARY KEY, n INT NOT NULL)")
        conn.executemany(f"INSERT INTO {self.table} VALUES (?, 0)", [(i,) for i in range(HOT_ROWS)])

    def choose(self, rng: random.Random, index: int, tally: Counter[str], accounts: int) -> Step:
        return Step("increment", (rng.randrange(HOT_ROWS),))

    def execute(self, conn: Any, step: Step, think: float) -> dict[str, int]:
        _simulate_work(think)
        conn.execute(f"UPDATE {self.table} SET n = n + 1 WHERE id = ?", step.args)
        return {f"row:{step.args[0]}": 1}

    def check(self, conn: Any, reports: list[dict[str, Any]], accounts: int) -> str:
        return _check_counts(conn, reports, self.table, "n", "counter")


class HotMix(HotCounter):
    """Long and short transactions on the same two hot rows: odd writers read a counter, work
    ``think`` and write it back; even writers increment one at once.  Nobody may starve."""

    name = "hotmix"
    summary = "odd writers read, think and write back a hot counter; even ones increment at once"

    def choose(self, rng: random.Random, index: int, tally: Counter[str], accounts: int) -> Step:
        return Step("long" if index % 2 else "short", (rng.randrange(HOT_ROWS),))

    def execute(self, conn: Any, step: Step, think: float) -> dict[str, int]:
        if step.kind == "short":
            return super().execute(conn, step, 0)
        (row,) = step.args
        _read_think_write(conn, self.table, "n", row, think)
        return {f"row:{row}": 1}


class Tally(HotCounter):
    """Increment a hot counter, then work: nothing read back, so where ours runs it
    optimistically (its body is long) and its merge conflicts, it is replayed, not failed."""

    name = "tally"
    summary = "each transaction increments one of two shared counters, then works"

    def execute(self, conn: Any, step: Step, think: float) -> dict[str, int]:
        conn.execute(f"UPDATE {self.table} SET n = n + 1 WHERE id = ?", step.args)
        _simulate_work(think)
        return {f"row:{step.args[0]}": 1}


class Orders(Workload):
    """An order, its id read back (``lastrowid``), and three lines pointing at it."""

    name = "orders"
    summary = "each transaction inserts an order, reads its id and inserts three lines for it"

    def create(self, conn: Any, writers: int, accounts: int) -> None:
        conn.execute("DROP TABLE IF EXISTS stress_lines")
        conn.execute("DROP TABLE IF EXISTS stress_orders")
        conn.execute("CREATE TABLE stress_orders (id INTEGER PRIMARY KEY, writer INT NOT NULL)")
        conn.execute(
            "CREATE TABLE stress_lines (order_id INTEGER NOT NULL, writer INT NOT NULL, k INT)"
        )

    def choose(self, rng: random.Random, index: int, tally: Counter[str], accounts: int) -> Step:
        return Step("order", (index,))

    def execute(self, conn: Any, step: Step, think: float) -> dict[str, int]:
        (writer,) = step.args
        order_id = conn.execute(
            "INSERT INTO stress_orders (writer) VALUES (?)", step.args
        ).lastrowid
        _simulate_work(think)
        conn.executemany(
            "INSERT INTO stress_lines VALUES (?, ?, ?)", [(order_id, writer, k) for k in range(3)]
        )
        return {"orders": 1}

    def check(self, conn: Any, reports: list[dict[str, Any]], accounts: int) -> str:
        (orders,) = conn.execute("SELECT count(*) FROM stress_orders").fetchone()
        want = _sum_tallies(reports)["orders"]
        (bad,) = conn.execute(
            "SELECT count(*) FROM stress_orders o WHERE 3 <> (SELECT count(*) FROM stress_lines "
            "l WHERE l.order_id = o.id AND l.writer = o.writer)"
        ).fetchone()
        problems = []
        if orders != want:
            problems.append(f"{orders} orders, commits reported {want}")
        if bad:
            problems.append(f"{bad} orders without exactly their own three lines")
        return "; ".join(problems)


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Ingest(),
        Disjoint(),
        Transfer(),
        OwnTable(),
        Mixed(),
        HotCounter(),
        Tally(),
        HotMix(),
        Orders(),
    )
}
