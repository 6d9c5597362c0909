"""Layers you can see: every import in ``pipeline/``, function-local ones included, goes down the
layer order or stays in its layer, and no module imports itself back through others (a cycle
hidden in a function is still a cycle). An AST check, like import-linter's layers contract."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "pipeline"
# Low to high: a module may import its own layer or a lower one.
# The sweep loop (search) writes to MLflow as it runs, so the writer (tracking) sits below it;
# what a finished study shows (reports) reads trials through search and sits above both.
LAYERS = ("core", "config", "io", "engine", "tracking", "search", "reports", "reuse", "cli")
# Modules outside the subpackages, by layer: the first version's names stand for the modules they
# became; writing and serving are the shell's file and port helpers (they need ConfigError only).
TOP_LEVEL = {
    "pipeline.activations": "core",
    "pipeline.initializers": "core",
    "pipeline.model": "core",
    "pipeline.theory": "core",
    "pipeline.data": "core",
    "pipeline.writing": "io",
    "pipeline.serving": "io",
    "pipeline.study": "search",
    "pipeline.export": "reuse",
    "pipeline.cli": "cli",
    "pipeline.__main__": "cli",
    "pipeline": "cli",  # the package root loads the public API (reuse.best) on first use
}
# The upward imports that remain, each with why; nothing else may go up. None today: the sweep
# is handed what it logs when a study finishes (the command passes the reports' figures).
ALLOWED_UPWARD: set[tuple[str, str]] = set()


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The ``pipeline`` modules ``name`` imports anywhere in its file (function bodies too):
    ``from package import submodule`` counts as the submodule."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, node.module or ""]).strip(".")
            subs = {f"{base}.{a.name}" for a in node.names} & MODULES.keys()
            found |= subs if subs and len(subs) == len(node.names) else {base, *subs}
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def layer(name: str) -> str:
    if name in TOP_LEVEL:
        return TOP_LEVEL[name]
    return name.split(".")[1]


def test_function_local_imports_are_read():
    assert "pipeline.search.sweep" in GRAPH["pipeline.cli"]  # imported inside cmd_sweep
    assert "pipeline.engine.preflight" in GRAPH["pipeline.cli"]


def test_every_module_has_a_layer():
    assert {layer(m) for m in MODULES} <= set(LAYERS)


def test_every_import_goes_down_the_layers():
    upward = {
        (m, t)
        for m, targets in GRAPH.items()
        for t in targets
        if LAYERS.index(layer(t)) > LAYERS.index(layer(m))
    }
    assert upward - ALLOWED_UPWARD == set(), "upward imports (move the code to its layer)"
    assert ALLOWED_UPWARD - upward == set(), "allowed but gone: drop them from ALLOWED_UPWARD"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
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
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


# Import cycles that remain, each named with why (none may be added). None today: best reads an
# entry through reuse.resolve and reuse.rates, which the exports build on; export reads best files.
KNOWN_CYCLES: list[list[str]] = []


def test_no_import_cycles_among_pipeline_modules():
    assert sorted(_cycles(GRAPH)) == sorted(KNOWN_CYCLES)


@pytest.mark.parametrize(
    ("planted", "target"),
    [
        ("pipeline.core.initializers", "pipeline.config.schema"),  # core reading config
        ("pipeline.config.load", "pipeline.engine.datasets"),  # the old config -> engine edge
    ],
)
def test_a_planted_back_edge_fails_both_checks(planted, target):
    graph = {m: set(t) for m, t in GRAPH.items()}
    graph[planted].add(target)
    assert LAYERS.index(layer(target)) > LAYERS.index(layer(planted))
    graph[target].add(planted)  # and the way back: a cycle
    assert sorted(_cycles(graph)) != sorted(KNOWN_CYCLES)
