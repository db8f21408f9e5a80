"""The package's layers, read from the source with ``ast`` (imports inside functions count too).

A layer imports only layers below it, never lazily upward (docs/architecture.md)::

    core      types, reranker, media, calibration, scorers (+ the starter models they run, _deps, _json, _checks)
    data      ingest, retrievers
    product   defaults, adapt
    faces     integrations, serving, cli, web, answer
    top       eval (nothing imports it but ``cli/eval.py``), testing (helpers for tests and benchmarks)

and no two subpackages import each other, directly or round a loop.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mm_rerank_components"
NAME = "mm_rerank_components"

LAYERS: dict[str, int] = {
    **dict.fromkeys(
        ("types", "reranker", "media", "calibration", "scorers", "starter", "_deps", "_json", "_checks"), 0
    ),
    **dict.fromkeys(("ingest", "retrievers"), 1),
    **dict.fromkeys(("defaults", "adapt"), 2),
    **dict.fromkeys(("integrations", "serving", "cli", "web", "answer"), 3),
    **dict.fromkeys(("eval", "testing"), 4),
}
LAYER_NAMES = ("core", "data", "product", "faces", "top")
#: The one module outside eval that may import it: the ``mm-rerank eval`` command.
EVAL_READERS = {"cli/eval.py"}
#: Modules exempt from the layer order, each with its reason (nothing imports them inside the package).
EXEMPT = {
    "retrievers/langchain.py": "old import path of integrations.langchain_retriever, kept for users",
    "retrievers/llama_index.py": "old import path of integrations.llama_index_retriever, kept for users",
}


def _unit(module: str) -> str:
    """``mm_rerank_components.scorers.base`` -> ``scorers``; the package itself -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path) -> Iterator[tuple[str, int]]:
    """Every ``mm_rerank_components`` module ``path`` imports (at any depth of the file), with its line."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    yield from _imports_in(path.read_text(encoding="utf-8"), module, path.name == "__init__.py")


def _imports_in(source: str, module: str, is_package: bool) -> Iterator[tuple[str, int]]:
    package = module if is_package else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == NAME:
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != NAME:
                continue
            if target == NAME:  # ``from mm_rerank_components import x``: x may be a subpackage
                for alias in node.names:
                    sub = f"{NAME}.{alias.name}"
                    yield (sub if _unit(sub) in LAYERS else NAME), node.lineno
            else:
                yield target, node.lineno


def _sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_subpackage_has_a_layer() -> None:
    units = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in _sources()} - {"__init__"}
    assert units <= set(LAYERS), f"give these a layer in tests/test_layers.py: {sorted(units - set(LAYERS))}"


def test_no_layer_imports_a_layer_above_it() -> None:
    problems = []
    for path in _sources():
        rel = path.relative_to(PACKAGE).as_posix()
        unit = rel.split("/")[0].removesuffix(".py")
        if unit == "__init__" or rel in EXEMPT:
            continue
        for target, line in _imports(path):
            other = _unit(target)
            if other in ("", unit) or (other == "eval" and rel in EVAL_READERS):
                continue
            if other == "eval" and unit != "testing":
                problems.append(f"{rel}:{line} imports {target} (nothing but cli/eval.py reads eval)")
            elif LAYERS[other] > LAYERS[unit]:
                problems.append(
                    f"{rel}:{line} ({LAYER_NAMES[LAYERS[unit]]}) imports {target} ({LAYER_NAMES[LAYERS[other]]})"
                )
    assert not problems, "layer violations:\n" + "\n".join(problems)


def test_the_package_root_imports_only_the_core_when_imported() -> None:
    tree = ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:  # module level only: load_reranker is fetched from adapt on first use
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(NAME + "."):
            assert LAYERS[_unit(node.module or "")] == 0, f"mm_rerank_components imports {node.module}"


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {unit: set() for unit in LAYERS}
    for path in _sources():
        unit = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if unit == "__init__" or path.relative_to(PACKAGE).as_posix() in EXEMPT:
            continue
        for target, _ in _imports(path):
            other = _unit(target)
            if other not in ("", unit):
                graph[unit].add(other)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def _where(unit: str, other: str) -> str:
    """The first line where ``unit`` imports ``other`` (for the failure message)."""
    for path in _sources():
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.split("/")[0].removesuffix(".py") == unit and rel not in EXEMPT:
            for target, line in _imports(path):
                if _unit(target) == other:
                    return f"{rel}:{line} imports {target}"
    return f"{unit} -> {other}"


def test_no_import_cycle_between_subpackages() -> None:
    cycle = _cycle(_graph())
    edges = [] if cycle is None else [_where(a, b) for a, b in itertools.pairwise(cycle)]
    assert cycle is None, (
        "import cycle (imports inside functions count): " + " -> ".join(cycle or []) + "\n" + "\n".join(edges)
    )


def test_the_checks_catch_what_they_look_for() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
    lazy = "def f():\n    from mm_rerank_components.adapt.folder import load_reranker\n"
    assert list(_imports_in(lazy, f"{NAME}.reranker", False)) == [(f"{NAME}.adapt.folder", 2)]
    relative = "from ..eval import tasks\nfrom . import base\nimport mm_rerank_components.web.app\n"
    found = [t for t, _ in _imports_in(relative, f"{NAME}.scorers.registry", False)]
    assert found == [f"{NAME}.eval", f"{NAME}.scorers", f"{NAME}.web.app"]
    assert any(_unit(t) == "scorers" for t, _ in _imports(PACKAGE / "reranker.py"))
