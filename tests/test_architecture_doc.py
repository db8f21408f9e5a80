"""docs/architecture.md names only modules that exist, and every subpackage of the tree has a row there."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mm_rerank_components"
DOC = ROOT / "docs" / "architecture.md"
#: A path in backquotes: ``scorers/registry.py``, ``ingest/``, ``tests/test_layers.py``.
PATH = re.compile(r"`((?:[A-Za-z_][\w]*/)*(?:[A-Za-z_][\w]*\.py|[A-Za-z_][\w]*/))`")


def named_paths(text: str) -> set[str]:
    return set(PATH.findall(text))


def _exists(name: str) -> bool:
    return any((base / name).exists() for base in (PACKAGE, ROOT))


def test_every_module_path_named_exists() -> None:
    missing = sorted(name for name in named_paths(DOC.read_text(encoding="utf-8")) if not _exists(name))
    assert not missing, f"docs/architecture.md names paths that do not exist (move their rows): {missing}"


def test_every_subpackage_and_top_module_is_on_the_map() -> None:
    named = named_paths(DOC.read_text(encoding="utf-8"))
    units = {f"{p.name}/" for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    units |= {p.name for p in PACKAGE.glob("*.py")}
    absent = sorted(units - named)
    assert not absent, f"docs/architecture.md has no row naming: {absent}"


def test_the_pattern_reads_paths_and_not_code() -> None:
    text = "`scorers/registry.py`, `ingest/`, `tests/test_layers.py`, `scorer_from_spec(spec)`, `kind[:path]`"
    assert named_paths(text) == {"scorers/registry.py", "ingest/", "tests/test_layers.py"}
    assert not _exists("scorers/nothing_here.py") and _exists("scorers/registry.py")
