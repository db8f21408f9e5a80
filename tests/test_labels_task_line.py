"""An eval-format file with its optional ``"type": "task"`` line (docs/evaluation.md) is also valid
labels for ``mm-rerank adapt`` (docs/adaptation.md says adapt reads the eval format): the line names the
task and is skipped, not refused (issue 23: docs/adaptation.md's sample run found it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mm_rerank_components.adapt.labels import LabelError, load_labels


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_task_line_is_skipped(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = [
        {"type": "task", "name": "foxes", "description": "optional"},
        {"type": "doc", "id": "d1", "text": "Foxes live in dens."},
        {"type": "doc", "id": "d2", "text": "Owls hunt at night."},
        {"type": "query", "id": "q1", "text": "where do foxes live", "relevant": ["d1"]},
    ]
    with_task = load_labels(_write(tmp_path / "with.jsonl", rows))
    without = load_labels(_write(tmp_path / "without.jsonl", rows[1:]))
    assert [q.text for q in with_task.queries] == [q.text for q in without.queries] == ["where do foxes live"]
    assert with_task.queries[0].relevant == without.queries[0].relevant == {"d1": 1}
    assert set(with_task.docs) == set(without.docs) == {"d1", "d2"}


def test_unknown_type_still_names_the_line_and_the_kinds(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.jsonl", [{"type": "tsak", "name": "x"}])
    with pytest.raises(
        LabelError, match=r'bad\.jsonl:1: expected an eval-format line \("type": "task", "doc"'
    ):
        load_labels(path)
