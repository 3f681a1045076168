"""The import graph of src/fusechat, read from the modules' import statements: no circles between modules, and
no arrow from a stage package up into the orchestration (`run/`) or the command line.

Stages talk to each other only through their on-disk formats; an upward import would let a stage depend on how
a whole run is planned, and a circle makes the import order (and so the behaviour) depend on who imports first.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
STAGES = ("data", "teacher", "align", "fuse", "train", "merge", "evaluate", "models")
ABOVE_STAGES = ("fusechat.run", "fusechat.cli")


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the fusechat modules it imports (at any depth in the file: lazy imports count too)."""
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
                # `from pkg import mod` imports the module pkg.mod when it is one
                targets.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_no_import_circles():
    # A package importing its own submodules from __init__ is not a circle in practice only when the submodule
    # does not import the package back; the graph treats both as modules, so any loop shows.
    assert _cycles(import_graph()) == []


def test_no_stage_imports_the_orchestration():
    graph = import_graph()
    upward = sorted(
        (m, t)
        for m, targets in graph.items()
        if m.split(".")[1:2] and m.split(".")[1] in STAGES
        for t in targets
        if t.startswith(ABOVE_STAGES)
    )
    assert upward == []


def test_the_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    assert "fusechat.run.stages" in graph["fusechat.run.plan"]
    assert "fusechat.errors" in graph["fusechat.cli"]
