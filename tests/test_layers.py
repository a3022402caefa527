"""Imports point one way (DESIGN.md, Layout): ``agents`` never imports ``api``; ``common``, the
plumbing the apps share, imports none of them; template tags import nothing that queries or
changes state; and no two modules of Conveyor import each other, directly or round a longer
circle, when they are first imported.

Read from the source with ``ast``, so nothing is imported to check it. The first checks count
every import, wherever it stands; the circle check counts what runs at import time: imports at
module level (also inside ``if``, ``try`` and ``with`` blocks and class bodies), not those inside
functions or ``if TYPE_CHECKING:`` blocks.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (
    "agents",
    "api",
    "artifacts",
    "common",
    "config",
    "executions",
    "notifications",
    "ops",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_files(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "migrations" not in p.parts)


@cache
def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def import_nodes(tree: ast.AST, *, at_import_time: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements of a module; with ``at_import_time``, only those that run when the
    module is first imported."""
    if not at_import_time:
        yield from (n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom))
        return
    yield from _run_at_import(ast.iter_child_nodes(tree))


def _run_at_import(nodes) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in nodes:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _run_at_import(node.orelse)
        else:
            yield from _run_at_import(ast.iter_child_nodes(node))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_modules(path: Path, *, at_import_time: bool = False) -> set[str]:
    """Every module a file imports, relative imports made absolute. ``from x import y`` counts
    as ``x`` and, when ``y`` is a module of its own, ``x.y``."""
    package = module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    names: set[str] = set()
    for node in import_nodes(parse(path), at_import_time=at_import_time):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
            continue
        base = package.rsplit(".", node.level - 1)[0] if node.level else ""
        module = ".".join(part for part in (base, node.module) if part)
        names.add(module)
        names.update(
            f"{module}.{alias.name}" for alias in node.names if is_module(f"{module}.{alias.name}")
        )
    return names


@cache
def is_module(name: str) -> bool:
    """Whether ``name`` is a module or package of Conveyor (a file, not a name inside one)."""
    if name.split(".")[0] not in PACKAGES:
        return False
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports_of(package: str) -> dict[str, set[str]]:
    return {str(path.relative_to(ROOT)): imported_modules(path) for path in source_files(package)}


def offenders(package: str, *forbidden: str) -> dict[str, list[str]]:
    found = {}
    for name, modules in imports_of(package).items():
        bad = sorted(m for m in modules if any(m == f or m.startswith(f + ".") for f in forbidden))
        if bad:
            found[name] = bad
    return found


def import_graph() -> dict[str, set[str]]:
    """Module → the modules of Conveyor its import runs, with their packages (which run first)
    unless the importing module is inside them (then they have run already)."""
    graph: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in source_files(package):
            source = module_name(path)
            inside = {source.rsplit(".", n)[0] for n in range(source.count(".") + 1)}
            targets = set()
            for name in imported_modules(path, at_import_time=True):
                if name.split(".")[0] not in PACKAGES:
                    continue
                parts = name.split(".")
                chain = {".".join(parts[:n]) for n in range(1, len(parts))}
                targets |= {name} | (chain - inside)
            graph[source] = targets
    for targets in graph.values():
        targets &= graph.keys()  # names of classes and functions are not modules
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle through each group of modules that import each other (Tarjan's strongly
    connected components), as ``[a, b, ..., a]``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph[node]:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [circle_in(graph, group) for group in groups]


def circle_in(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A shortest circle from the group's first module back to itself, inside the group."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & group):
                if target == start:
                    return [*paths[node], start]
                if target not in paths:
                    paths[target] = [*paths[node], target]
                    following.append(target)
        frontier = following
    raise AssertionError(f"no circle in {group}")


# --- The rules ----------------------------------------------------------------------------------


def test_agents_never_imports_api():
    assert offenders("agents", "api") == {}


def test_the_shared_plumbing_imports_none_of_the_apps():
    assert imports_of("common")  # the package is there and read
    assert offenders("common", "agents", "api", "executions", "ops") == {}


def test_template_tags_import_no_models_views_services_or_selectors():
    libraries = sorted(ROOT.glob("*/templatetags/*.py"))
    assert libraries
    for path in libraries:
        for module in imported_modules(path):
            last = module.rsplit(".", 1)[-1]
            assert not module.startswith("django.db"), (path, module)
            assert not last.endswith(("models", "views", "services", "selectors")), (path, module)


def test_no_modules_import_each_other_at_import_time():
    graph = import_graph()
    assert "executions.services" in graph["executions.runner"]  # the graph is read
    found = cycles(graph)
    assert not found, "Modules that import each other at import time:\n" + "\n".join(
        "  " + " → ".join(circle) for circle in found
    )


def test_the_circle_check_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert sorted(cycles(graph)) == [["a", "b", "c", "a"], ["e", "e"]]
