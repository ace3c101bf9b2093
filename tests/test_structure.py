"""The import graph of the package reads left to right: no circles, and no function-level import that only
hides one (issue 11). Parsed from the sources, so it needs nothing installed but the files."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (("rkd_edge", "rkd_edge"), ("export", "rkd_edge.export"), ("devices", "rkd_edge.devices"))


def modules() -> dict[str, Path]:
    found = {}
    for folder, pkg in PACKAGES:
        for f in (ROOT / folder).rglob("*.py"):
            parts = [p for p in f.relative_to(ROOT / folder).with_suffix("").parts if p != "__init__"]
            found[".".join([pkg, *parts])] = f
    return found


def import_edges(mods: dict[str, Path]) -> list[tuple[str, str, bool, int]]:
    """``(importer, imported, at_top_level, line)`` for every import of one of our modules."""
    edges = []
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        top = set(map(id, tree.body))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # "from pkg import sub" depends on pkg.sub when sub is a module, else on pkg.
                targets = [
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else node.module for a in node.names
                ]
            else:
                continue
            for target in targets:
                if target in mods and target != name:
                    edges.append((name, target, id(node) in top or _in_type_checking(tree, node), node.lineno))
    return edges


def _in_type_checking(tree: ast.Module, node: ast.AST) -> bool:
    for stmt in tree.body:
        if (
            isinstance(stmt, ast.If)
            and "TYPE_CHECKING" in ast.unparse(stmt.test)
            and any(n is node for n in ast.walk(stmt))
        ):
            return True
    return False


def reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        v = todo.pop()
        if v == goal:
            return True
        if v not in seen:
            seen.add(v)
            todo.extend(graph.get(v, ()))
    return False


def test_no_import_circles_at_module_level():
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for a, b, top, _ in import_edges(mods):
        if top:
            graph[a].add(b)
    # A package's __init__ importing its own submodules is the one allowed shape of mutual reference.
    circles = [
        (a, b)
        for a in graph
        for b in graph[a]
        if reaches(graph, b, a) and not (b.startswith(a + ".") or a.startswith(b + "."))
    ]
    assert not circles, f"import circles: {circles}"


def test_no_function_level_import_hides_a_circle():
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    edges = import_edges(mods)
    for a, b, _top, _ in edges:
        graph[a].add(b)
    hidden = [f"{a}:{line} -> {b}" for a, b, top, line in edges if not top and reaches(graph, b, a)]
    assert not hidden, "function-level imports that close a circle: " + "; ".join(hidden)


def test_every_module_is_imported_by_something():
    """No part of the package is left unimported (devices/ and export/ included)."""
    mods = modules()
    imported = {b for _, b, _, _ in import_edges(mods)}
    # A package is imported with any of its modules; registries may name a module to import lazily.
    imported |= {m for m in mods if any(i.startswith(m + ".") for i in imported)}
    sources = "\n".join(p.read_text() for p in mods.values())
    # ... or import it in a script run as a fresh process (a code string).
    named = {m for m in mods if f'"{m}"' in sources or f"from {m} import" in sources}
    entry = {"rkd_edge", "rkd_edge.__main__"}
    unused = sorted(m for m in mods if m not in imported | named | entry)
    assert not unused, f"modules nothing imports: {unused}"
