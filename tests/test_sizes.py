"""Sizes, read from the source with ``ast`` (issue 20 item 4, CONTRIBUTING.md).

No function or method in ``mm_rerank_components/`` runs over 60 lines and no class over 300, unless its
docstring has a line starting with ``Size:`` that gives the reason in one line. A line count is the
definition's span from its ``def``/``class`` line (decorators excluded) to its last line, docstring and
comments included: what a reader scrolls through.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mm_rerank_components"
MAX_FUNCTION_LINES = 60
MAX_CLASS_LINES = 300

#: Offenders allowed for now, each with its reason: ``"path/inside/package.py:Qualified.name": "reason"``.
#: Empty since 2026-12-07 (the last 7 were split). Nothing may join it without a reason; an entry that is no
#: longer an offender fails the test, so the list only shrinks.
ALLOWED: dict[str, str] = {}


def _has_size_reason(node: ast.AST) -> bool:
    doc = ast.get_docstring(node) if isinstance(node, _DEFS) else None
    return doc is not None and any(line.strip().startswith("Size:") for line in doc.splitlines())


_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _definitions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, ast.AST]]:
    """Every function, method and class in ``tree`` with its dotted name (nested ones too)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, _DEFS):
            name = f"{prefix}{node.name}"
            yield name, node
            yield from _definitions(node, f"{name}.")
        else:
            yield from _definitions(node, prefix)


def oversized(source: str, path: str) -> list[tuple[str, int, int]]:
    """``(path:name, lines, limit)`` for each definition in ``source`` over its limit without a ``Size:``."""
    found = []
    for name, node in _definitions(ast.parse(source)):
        assert isinstance(node, _DEFS)
        limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
        end = node.end_lineno if node.end_lineno is not None else node.lineno
        lines = end - node.lineno + 1
        if lines > limit and not _has_size_reason(node):
            found.append((f"{path}:{name}", lines, limit))
    return found


def all_oversized() -> list[tuple[str, int, int]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        found.extend(oversized(path.read_text(encoding="utf-8"), rel))
    return found


def test_no_definition_over_its_size_without_a_reason() -> None:
    offenders = [f"{key}: {lines} lines (limit {limit})" for key, lines, limit in all_oversized()]
    new = [line for line in offenders if line.split(": ")[0] not in ALLOWED]
    assert not new, (
        "split these, or give a one-line reason on a docstring line starting 'Size:':\n" + "\n".join(new)
    )


def test_allowlist_only_names_current_offenders() -> None:
    current = {key for key, _, _ in all_oversized()}
    stale = sorted(set(ALLOWED) - current)
    assert not stale, f"no longer over size (or renamed): remove from ALLOWED in tests/test_sizes.py: {stale}"
    assert all(reason.strip() for reason in ALLOWED.values()), "each ALLOWED entry needs its reason"


def test_the_check_counts_spans_and_honours_size_lines() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    long_function = f"def long():\n{body}\n"
    assert oversized(long_function, "m.py") == [("m.py:long", MAX_FUNCTION_LINES + 1, MAX_FUNCTION_LINES)]
    reasoned = (
        f'def long():\n    """Does a lot.\n\n    Size: one table of cases, read top to bottom."""\n{body}\n'
    )
    assert oversized(reasoned, "m.py") == []
    nested = f"class C:\n    def method(self):\n{body.replace('    ', '        ')}\n"
    assert [key for key, _, _ in oversized(nested, "m.py")] == ["m.py:C.method"]
    short = "def short():\n    return 1\n"
    assert oversized(short, "m.py") == []


def test_a_long_class_is_caught() -> None:
    methods = "\n".join(f"    def m{i}(self):\n        return {i}\n" for i in range(MAX_CLASS_LINES // 3 + 1))
    found = oversized(f"class Big:\n{methods}", "m.py")
    assert [key for key, _, _ in found] == ["m.py:Big"]
