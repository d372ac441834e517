"""The house's arrows (DESIGN.md): no import cycles among linreg's own modules, counting the
imports inside functions too (a cycle there is still two modules that need each other), and
``serve`` never imports ``trainer``."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    files = [p for pkg in ("serve", "trainer") for p in (ROOT / pkg).rglob("*.py")
             if "proto" not in p.parts]
    modules = {_module(p): p for p in files}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for t in targets:
                if t in modules and t != name:
                    graph[name].add(t)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_cycles():
    graph = _graph()
    assert _cycle({m: {n for n in deps if n.split(".")[0] == "trainer"}
                   for m, deps in graph.items() if m.split(".")[0] == "trainer"}) is None
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_serve_never_imports_trainer():
    graph = _graph()
    offenders = {m: sorted(n for n in deps if n.startswith("trainer"))
                 for m, deps in graph.items() if m.startswith("serve")}
    assert not {m: d for m, d in offenders.items() if d}


# What each part of the house may import (inside linreg), counting imports inside functions:
# the core stands alone, the runtime on the core, the server and batch prediction on both, the
# trainer on the core and the runtime; the console scripts (serve.cli, serve/__init__) wire.
LAYERS = {
    "serve.core": ("serve.core", "serve.version"),
    "serve.runtime": ("serve.core", "serve.runtime", "serve.version"),
    "serve.server": ("serve.core", "serve.runtime", "serve.server", "serve.version"),
    "serve.batch": ("serve.core", "serve.runtime", "serve.batch", "serve.version"),
    "trainer": ("trainer", "serve.core", "serve.runtime", "serve.version", "serve"),
}


def test_each_part_imports_only_the_parts_below_it():
    graph = _graph()
    wrong = {}
    for module, deps in graph.items():
        layer = next((k for k in LAYERS if module == k or module.startswith(k + ".")), None)
        if layer is None:
            continue
        allowed = LAYERS[layer]
        bad = sorted(d for d in deps if not any(
            d == a or (a != "serve" and d.startswith(a + ".")) for a in allowed))
        if bad:
            wrong[module] = bad
    assert not wrong
    assert set(graph) >= {"serve.core.errors", "serve.runtime.predictor", "serve.server.dataplane",
                          "serve.batch.files"}
