"""The package's shape: no two modules import each other, directly or around a circle, at any depth of the
code (imports inside functions count: they are how a circle hides)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT


def import_graph() -> dict[str, set[str]]:
    modules = {}
    for path in (ROOT / "assistant").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("assistant"):
                targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def test_no_import_circle():
    graph = import_graph()

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            if node == goal:
                return True
            if node not in seen:
                seen.add(node)
                todo.extend(graph[node])
        return False

    circles = sorted((a, b) for a in graph for b in graph[a] if reaches(b, a))
    assert not circles, f"modules that import each other, directly or around a circle: {circles}"
    assert "assistant.models.export" in graph["assistant.engines.llamacpp_engine"]  # the engine imports GGUF files
