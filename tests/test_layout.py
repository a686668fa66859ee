"""The code's shape: no module imports another that imports it back (lazy imports count)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[1]
RUN = ("benchmarks", "models", "strategies", "experiments")  # what a run imports
PACKAGES = (*RUN, "perf")


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str) -> set[str]:
    """Project modules `path` imports anywhere in it (top level or inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return out


def import_graph() -> dict[str, set[str]]:
    files = {_module(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    return {name: {m for m in _imports(path, name) if m in files and m != name}
            for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_no_import_cycles_between_modules():
    graph = import_graph()
    assert "experiments.jobs" in graph["experiments.ray_executor"]  # the graph sees imports
    assert "experiments.ray_executor" in graph["experiments.grid"]  # lazy ones too
    assert cycles(graph) == []


def test_the_benchmark_script_stays_outside_what_a_run_imports():
    graph = import_graph()
    assert any(m.startswith("experiments.") for m in graph["perf.loops"])  # perf uses the suite
    assert [(a, b) for a, deps in graph.items() if a.split(".")[0] in RUN
            for b in deps if b.split(".")[0] == "perf"] == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a.x": {"a.y"}, "a.y": {"a.x"}}) == [["a.x", "a.y", "a.x"]]


# benchmarks/ by concern, each layer importing only from the layers before it.
LAYERS = [
    ("benchmarks.errors",),
    ("benchmarks.formats", "benchmarks.images", "benchmarks.metrics"),  # labels, pixels, scores
    ("benchmarks.datasets",),  # labels + files on disk + splits -> experiences
    ("benchmarks.stream",),  # experiences + the image pipeline -> the Avalanche benchmark
    ("benchmarks.features",),  # the same stream as frozen-backbone features
    ("benchmarks.demo",),  # demo data in the real formats; nothing above imports it
]


def _layer(module: str) -> int:
    for i, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    raise AssertionError(f"{module} belongs to no layer of benchmarks/: add it to LAYERS")


def test_benchmarks_imports_run_one_way():
    graph = import_graph()
    bench = {m: deps for m, deps in graph.items() if m.startswith("benchmarks.")}
    assert "benchmarks.datasets.files" in graph["benchmarks.datasets.experiences"]
    upward = [(a, b) for a, deps in bench.items() for b in deps
              if b.startswith("benchmarks.") and _layer(b) > _layer(a)]
    assert upward == []
    # benchmarks/ knows nothing of models, strategies or the runner.
    assert [(a, b) for a, deps in bench.items() for b in deps
            if b.split(".")[0] in ("models", "strategies", "experiences", "experiments")] == []
