"""The package's layout as docs/architecture.md states it: the library never imports the command
line, and no library modules import each other in a circle.  And every benchmark script still
finds what it imports from the library.

Imports are read from the source with ``ast``, including those inside functions (a lazy import
is a dependency all the same); imports under ``if TYPE_CHECKING:`` are left out, as they never run.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import sqlite_concurrent

SRC = Path(sqlite_concurrent.__file__).parent
PACKAGE = "sqlite_concurrent"
CLI = f"{PACKAGE}.cli"

# ``python -m sqlite_concurrent`` must start the command line, so __main__ imports it; the library
# itself never imports __main__.
ENTRY_POINTS = {f"{PACKAGE}.__main__"}

# dbapi2 is the package under the stdlib's other name for it (``from sqlite3 import dbapi2``): it
# re-exports the package's names, and the package binds it as its attribute ``dbapi2`` once every
# other name is defined, as the stdlib's sqlite3 does.  It defines nothing of its own.
ALLOWED_CYCLES = [{PACKAGE, f"{PACKAGE}.dbapi2"}]


def _name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_name(path): path for path in sorted(SRC.rglob("*.py"))}


def _type_checking_only(tree: ast.AST) -> set[ast.AST]:
    skipped: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                skipped.update(ast.walk(child))
    return skipped


def _imported(module: str, *, type_checking: bool) -> dict[str, int]:
    """Modules of the package that ``module`` imports, with the line of the first import."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    skipped = set() if type_checking else _type_checking_only(tree)
    found: dict[str, int] = {}
    for node in ast.walk(tree):
        if node in skipped:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [
                f"{source}.{alias.name}" if f"{source}.{alias.name}" in MODULES else source
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            # ``import a.b.c`` runs a, a.b and a.b.c: the nearest one that is ours counts.
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != module:
                found.setdefault(target, node.lineno)
    return found


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def _describe(component: list[str], graph: dict[str, dict[str, int]]) -> str:
    edges = [
        f"{source} imports {target} (line {line})"
        for source in component
        for target, line in graph[source].items()
        if target in component
    ]
    return "; ".join(edges)


def test_modules_are_found():
    assert {PACKAGE, f"{PACKAGE}.dbapi", CLI, f"{CLI}.app", f"{CLI}.stress"} <= set(MODULES)


def test_library_never_imports_the_command_line():
    offenders = [
        f"{module} imports {target} (line {line})"
        for module in MODULES
        if not (module == CLI or module.startswith(CLI + ".")) and module not in ENTRY_POINTS
        for target, line in _imported(module, type_checking=True).items()
        if target == CLI or target.startswith(CLI + ".")
    ]
    assert offenders == []


def test_no_import_cycles():
    graph = {module: _imported(module, type_checking=False) for module in MODULES}
    cycles = [c for c in _cycles(graph) if set(c) not in ALLOWED_CYCLES]
    assert cycles == [], "\n".join(_describe(c, graph) for c in cycles)


def _in(package: str) -> list[str]:
    return sorted(m for m in MODULES if m.startswith(f"{PACKAGE}.{package}."))


def test_the_layers_are_packages():
    """architecture.md's layers are folders: each holds what its section says it does."""
    for package, modules in {
        "engine": {"ways", "direct", "transaction", "exclusive", "rerun", "rebase", "savepoints"},
        "storage": {"snapshot", "overlay", "journal", "sidecar"},
        "commit": {"merge", "replay", "checkpoint"},
        "locking": {"lockdb", "grants", "levels", "locks", "waits", "oslock"},
        "process": {"holding", "leftovers", "foreign", "plain_open", "exiting"},
    }.items():
        assert {f"{PACKAGE}.{package}.{m}" for m in modules} <= set(_in(package)), package


# architecture.md's layers, top down.  A module imports modules of its own layer or below; the
# foundation (exceptions, names, crash points, telling processes apart) is importable from any.
LAYERS = ["engine", "commit", "process", "locking", "storage"]
FOUNDATION = {
    f"{PACKAGE}.{name}"
    for name in ("errors", "conflicts", "filenames", "identifiers", "statements", "crashpoints")
} | {f"{PACKAGE}.locking.processes"}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 2 and parts[1] in LAYERS else None


def test_lower_layers_never_import_upper_ones():
    offenders = [
        f"{module} imports {target} (line {line})"
        for module in MODULES
        if (layer := _layer(module)) is not None
        for target, line in _imported(module, type_checking=True).items()
        if target not in FOUNDATION and (_layer(target) is None or _layer(target) < layer)
    ]
    assert offenders == []


def test_locking_and_storage_never_reach_the_commit_layer():
    """The merge takes locks and reads snapshots, never the other way round (architecture.md's
    layers): no locking or storage module imports, even through another, the commit modules."""
    graph = {module: _imported(module, type_checking=False) for module in MODULES}
    lower = [*_in("locking"), *_in("storage"), f"{PACKAGE}.process.holding"]
    commit = set(_in("commit"))
    offenders = {}
    for name in lower:
        reached, frontier = set(), [name]
        while frontier:
            for target in graph[frontier.pop()]:
                if target not in reached:
                    reached.add(target)
                    frontier.append(target)
        if reached & commit:
            offenders[name] = sorted(reached & commit)
    assert offenders == {}


def test_using_the_library_loads_no_command_line(tmp_path):
    """What the import graph says, checked in a fresh process that writes and reads a database."""
    code = (
        "import sys, sqlite_concurrent\n"
        f"conn = sqlite_concurrent.connect({str(tmp_path / 'app.db')!r})\n"
        "conn.execute('CREATE TABLE t(x)')\n"
        "conn.execute('INSERT INTO t VALUES (1)')\n"
        "conn.commit()\n"
        "assert conn.execute('SELECT x FROM t').fetchall() == [(1,)]\n"
        "conn.close()\n"
        f"print(sorted(m for m in sys.modules if m == {CLI!r} or m.startswith({CLI + '.'!r})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


BENCHMARKS = sorted(
    p for p in (Path(__file__).parent.parent / "benchmarks").glob("*.py") if p.name[0] != "_"
)


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.name)
@pytest.mark.timeout(60)
def test_every_benchmark_imports_and_describes_itself(script):
    """A benchmark is not run in CI: at least what it imports from the library must exist."""
    ran = subprocess.run(
        [sys.executable, script.name, "--help"],
        cwd=script.parent,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert ran.returncode == 0, ran.stderr
    assert "usage:" in ran.stdout
