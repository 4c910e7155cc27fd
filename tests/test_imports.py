"""The package has no import circles: every ``import`` of an ``rlvr_cli`` module inside ``rlvr_cli``,
at module level or inside a function, is an edge, and the graph is acyclic (issue 25: a circle such as
analysis -> cli -> analysis, or two engines importing each other, fails here)."""
from __future__ import annotations

import ast
from pathlib import Path

import rlvr_cli

PACKAGE = Path(rlvr_cli.__file__).parent


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the package modules it imports (``from a import b`` names a.b when b is a module)."""
    mods = {}
    for path in root.rglob("*.py"):
        parts = ["rlvr_cli", *path.relative_to(root).with_suffix("").parts]
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def known(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            graph[mod] |= {t for n in names if n.startswith("rlvr_cli") and (t := known(n)) and t != mod}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_package_has_no_import_circles():
    assert cycles(import_graph()) == []


def test_the_check_finds_a_circle(tmp_path):
    pkg = tmp_path / "rlvr_cli"
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("")
    (pkg / "a" / "x.py").write_text("from rlvr_cli.a.y import f\n")
    (pkg / "a" / "y.py").write_text("def f():\n    from rlvr_cli.a import x\n")
    assert cycles(import_graph(pkg)) == [["rlvr_cli.a.x", "rlvr_cli.a.y"]]
