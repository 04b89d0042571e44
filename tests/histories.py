"""Checks list-append histories (tests/history_workers.py) against what a lock level promises.

Every value is appended once, by one transaction, so the final lists give each key's version
order, and each read (a prefix of its list) names the transaction it read from and the one
that overwrote what it saw.  From these the checker builds the dependency graph of committed
transactions (Adya's: ww, wr and rw edges), plus realtime edges (a transaction acknowledged
before another began precedes it), and looks for the cycles the level forbids:

- ``page`` and ``table`` promise serializability: no cycle at all;
- ``row`` promises snapshot isolation: no cycle without an rw edge, and none with exactly one
  (G-single: a lost update, or a read that is not a snapshot).

Before the graph it checks what needs no graph: no acknowledged append lost or applied twice,
no failed transaction's append visible, every read a prefix of the final list, and a
transaction's reads of one key agreeing with each other and with its own appends.  A
transaction whose process was killed before it ended (outcome "unknown", its planned appends
as its ops) may have committed or not, but all of it or nothing.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Iterable


class Txn:
    __slots__ = ("began", "ended", "name", "ok", "ops")

    def __init__(self, name: str, ops: list[tuple], ok: bool, began: float, ended: float):
        self.name, self.ops, self.ok, self.began, self.ended = name, ops, ok, began, ended

    def __repr__(self) -> str:
        # A read shows how many values it saw and the last: the lists grow long.
        ops = [
            f"r {op[1]}[{op[2]}]=..{len(op[3])}:{op[3][-1] if op[3] else '-'}"
            if op[0] == "r"
            else f"a {op[1]}[{op[2]}]+{op[3]}"
            for op in self.ops
        ]
        return f"{self.name}{'' if self.ok else '(failed)'}({', '.join(ops)})"


def check(
    histories: Iterable[list[tuple]],
    final: dict[tuple, list[int]],
    level: str,
    inserted: Iterable[str] = (),
) -> list[str]:
    """What is wrong with ``histories`` (one per process) ending in ``final`` (``(table, key)``
    to list), at ``level``; empty if nothing.  In the ``inserted`` tables each append is a row
    of its own: two transactions appending to one list write no common row, so at the row
    level (snapshot isolation, whose write conflicts are per row) their order is no
    dependency."""
    txns = []
    problems = []
    present = {v for values in final.values() for v in values}
    for p, history in enumerate(histories):
        for i, (ops, outcome, began, ended) in enumerate(history):
            ok = outcome == "ok"
            if outcome == "unknown":
                # Its process was killed: committed or not, but all or nothing.
                appended = [op[3] in present for op in ops if op[0] == "a"]
                ok = bool(appended) and all(appended)
                if ok != any(appended):
                    problems.append(f"p{p}t{i}, killed, committed in part: {ops}")
            elif outcome not in ("ok", "conflict"):
                problems.append(f"process {p} transaction {i} raised {outcome}")
            txns.append(Txn(f"p{p}t{i}", ops, ok, began, ended))
    writer: dict[int, Txn] = {}
    for t in txns:
        for op in t.ops:
            if op[0] == "a":
                writer[op[3]] = t
    problems += _check_final(txns, final, writer)
    problems += _check_reads(txns, final)
    if problems:
        return problems
    unordered = set(inserted) if level == "row" else set()
    return _check_cycles([t for t in txns if t.ok], final, writer, level, unordered)


def _check_final(txns: list[Txn], final: dict[tuple, list[int]], writer: dict[int, Txn]):
    problems = []
    for key, values in final.items():
        for v, n in collections.Counter(values).items():
            if n > 1:
                problems.append(f"{key}: {v} appended {n} times (by {writer.get(v)})")
        for v in values:
            if v not in writer:
                problems.append(f"{key}: {v} was never appended")
            elif not writer[v].ok:
                problems.append(f"{key}: {v} of a failed transaction is there: {writer[v]}")
    for t in txns:
        for op in t.ops:
            if op[0] == "a" and t.ok and op[3] not in final.get((op[1], op[2]), ()):
                problems.append(f"{(op[1], op[2])}: acknowledged {op[3]} is lost: {t}")
    return problems


def _check_reads(txns: list[Txn], final: dict[tuple, list[int]]):
    problems = []
    for t in txns:
        own: dict[tuple, list[int]] = collections.defaultdict(list)
        seen: dict[tuple, list[int]] = {}
        for op in t.ops:
            key = (op[1], op[2])
            if op[0] == "a":
                own[key].append(op[3])
                continue
            values, mine = op[3], own[key]
            if mine and values[-len(mine) :] != mine:
                problems.append(f"{key}: read {values} misses its own appends {mine}: {t}")
                continue
            before = values[: len(values) - len(mine)]
            if key in seen and seen[key] != before:
                problems.append(f"{key}: read {seen[key]}, then {before}: {t}")
            seen[key] = before
            if final.get(key, [])[: len(before)] != before:
                problems.append(f"{key}: read {before}, not a prefix of {final.get(key)}: {t}")
    return problems


def _check_cycles(
    txns: list[Txn],
    final: dict[tuple, list[int]],
    writer: dict[int, Txn],
    level: str,
    unordered: set[str],
) -> list[str]:
    # Nodes are transactions and realtime points; edges carry their kind.
    edges: dict[object, list[tuple[object, str]]] = collections.defaultdict(list)

    def edge(a: object, b: object, kind: str) -> None:
        if a is not b:
            edges[a].append((b, kind))

    for key, values in final.items():
        if key[0] in unordered:
            continue
        for a, b in itertools.pairwise(values):
            edge(writer[a], writer[b], "ww")
    for t in txns:
        own: collections.Counter[tuple] = collections.Counter()
        for op in t.ops:
            key = (op[1], op[2])
            if op[0] == "a":
                own[key] += 1
                continue
            n = len(op[3]) - own[key]  # the version it read from its snapshot
            values = final.get(key, [])
            if n:
                edge(writer[values[n - 1]], t, "wr")
            if n < len(values):
                edge(t, writer[values[n]], "rw")
    # Realtime: one chain of points, in the order transactions ended; each points to those
    # that began after it.  Ties give no edge.
    events = sorted(
        [(t.began, 0, i) for i, t in enumerate(txns)]
        + [(t.ended, 1, i) for i, t in enumerate(txns)]
    )
    last = None
    for _, is_end, i in events:
        if is_end:
            point = ("after", i)
            edge(txns[i], point, "rt")
            if last is not None:
                edge(last, point, "rt")
            last = point
        elif last is not None:
            edge(last, txns[i], "rt")

    if level in ("page", "table"):
        cycle = _find_cycle(edges, lambda kind: True)
        return [f"a cycle at {level} level: {_show(cycle)}"] if cycle else []
    cycle = _find_cycle(edges, lambda kind: kind != "rw")
    if cycle:
        return [f"a cycle without rw edges: {_show(cycle)}"]
    for a, out in list(edges.items()):
        for b, kind in out:
            if kind == "rw":
                path = _path(edges, b, a)
                if path is not None:
                    return [f"G-single: {_show([(a, 'rw'), *path])}"]
    return []


def _path(edges, start, goal) -> list[tuple[object, str]] | None:
    """A path of non-rw edges from ``start`` to ``goal``, as (node, kind of its out edge)."""
    parent: dict[object, tuple[object, str] | None] = {start: None}
    todo = [start]
    while todo:
        node = todo.pop()
        if node is goal:
            path = []
            while parent[node] is not None:
                prev, kind = parent[node]  # type: ignore[misc]
                path.append((prev, kind))
                node = prev
            return path[::-1]
        for nxt, kind in edges.get(node, ()):
            if kind != "rw" and nxt not in parent:
                parent[nxt] = (node, kind)
                todo.append(nxt)
    return None


def _find_cycle(edges, allowed) -> list[tuple[object, str]] | None:
    """A cycle of ``allowed`` edges, as (node, kind of its out edge), or ``None``."""
    color: dict[object, int] = {}
    for root in list(edges):
        if root in color:
            continue
        stack = [(root, iter(edges.get(root, ())))]
        trail: list[tuple[object, str]] = []
        color[root] = 1
        while stack:
            node, it = stack[-1]
            for nxt, kind in it:
                if not allowed(kind):
                    continue
                if color.get(nxt) == 1:
                    trail.append((node, kind))
                    start = next(i for i, (n, _) in enumerate(trail) if n == nxt)
                    return trail[start:]
                if nxt not in color:
                    color[nxt] = 1
                    trail.append((node, kind))
                    stack.append((nxt, iter(edges.get(nxt, ()))))
                    break
            else:
                color[node] = 2
                stack.pop()
                if trail:
                    trail.pop()
    return None


def _show(cycle: list[tuple[object, str]]) -> str:
    return " ".join(f"{node!r} -{kind}->" for node, kind in cycle if isinstance(node, Txn)) or str(
        cycle
    )
