"""The import graph of the project, built by grimp (import-linter's graph library) from the source files:
models/ has no import cycle, and models/ is the only top-level package that imports MLflow."""

from __future__ import annotations

import grimp
import pytest

PACKAGES = ("core", "models", "tasks", "flows", "deployments", "bench")


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, include_external_packages=True, cache_dir=None)


def _edges(graph: grimp.ImportGraph, package: str) -> dict[str, set[str]]:
    inside = {m for m in graph.modules if m == package or m.startswith(package + ".")}
    return {m: graph.find_modules_directly_imported_by(m) & inside for m in inside}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (first module repeated at the end), or None; depth-first, white/grey/black."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(edges.get(m, ())):
            if state.get(n) == 1:
                return [*stack[stack.index(n) :], n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_find_cycle_when_modules_import_in_a_circle_then_the_circle_is_returned() -> None:
    # The checker itself: a three-module circle is found, a chain is not.
    circle = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    chain = {"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a"}}
    assert find_cycle(circle) == ["a", "b", "c", "a"]
    assert find_cycle(chain) is None


def test_models_imports_when_graph_built_then_no_cycle_among_models_modules(graph: grimp.ImportGraph) -> None:
    edges = _edges(graph, "models")
    assert {"models.pipeline", "models.promotion", "models.scorer", "models.tracking"} <= set(edges)
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges) or [])


def test_models_imports_when_graph_built_then_only_models_imports_mlflow(graph: grimp.ImportGraph) -> None:
    importers = graph.find_modules_that_directly_import("mlflow")
    assert importers, "grimp found no importer of mlflow: the graph is not the project's"
    assert {m for m in importers if not m.startswith("models.")} == set()
