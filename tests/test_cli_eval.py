"""``mm-rerank eval`` end to end on a small labelled file (hashing first stage, fake scorer)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from mm_rerank_components.cli import eval as cli_eval


def _labels(folder: Path) -> Path:
    folder.mkdir(parents=True)
    lines: list[dict[str, object]] = [{"type": "task", "name": "tiny"}]
    animals = ("fox", "owl", "heron", "badger", "otter", "lynx")
    for k, animal in enumerate(animals):
        lines.append({"type": "doc", "id": f"t{k}", "text": f"The {animal} lives near the river {k}."})
        Image.new("RGB", (32, 24), (40 * k, 100, 200 - 30 * k)).save(folder / f"{animal}.png")
        lines.append({"type": "doc", "id": f"i{k}", "image": f"{animal}.png", "text": f"a {animal}"})
    for k, animal in enumerate(animals):
        for split in ("dev", "test"):
            lines.append(
                {
                    "type": "query",
                    "id": f"{split}{k}",
                    "text": f"where does the {animal} live",
                    "relevant": [f"t{k}", f"i{k}"],
                    "split": split,
                }
            )
    path = folder / "labels.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.slow
def test_eval_runs_on_your_labels_and_writes_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = _labels(tmp_path / "data")
    out = tmp_path / "report"
    args = ["--data", str(labels), "--scorer", "fake", "--embedder", "hashing", "--no-plots"]
    code = cli_eval.main([*args, "--depths", "", "--k-text", "4", "--k-image", "4", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "tiny (held-out test queries" in printed and "R@10" in printed
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert list(results["tasks"]) == ["tiny"]
    assert (out / "report.md").is_file()


def test_eval_refuses_bad_options_with_the_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        cli_eval.main(["--data", "x.jsonl", "--k-text", "0"])
    assert stop.value.code == 2
    assert "--k-text and --k-image must be >= 1, got 0" in capsys.readouterr().err
    assert cli_eval.main(["--data", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o")]) == 2
    assert "missing.jsonl does not exist" in capsys.readouterr().err
