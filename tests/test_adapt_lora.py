"""``adapt(..., lora=True)`` / ``mm-rerank adapt --lora``: LoRA-tune a model scorer, then learned fusion.

A tiny random BERT cross-encoder built from a config: the tests prove the plumbing (the adapter is
trained, saved in the folder, put back by ``load_reranker`` with identical scores), never quality.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("chromadb")

from mm_rerank_components import Candidate
from mm_rerank_components.adapt import load_reranker
from mm_rerank_components.adapt.pipeline import adapt, format_report
from mm_rerank_components.testing import build_bert_cross_encoder

WORDS = ["red", "fox", "snow", "owl", "den", "wolf", "cat", "a", "the", "in", "night", "river", "dog"]


def _labels(folder: Path) -> Path:
    lines = []
    for i, (animal, place) in enumerate(
        [
            ("fox", "den"),
            ("owl", "night"),
            ("wolf", "snow"),
            ("cat", "river"),
            ("dog", "den"),
            ("fox", "snow"),
        ]
    ):
        lines.append(
            {
                "query": f"the {animal} {i}",
                "pos": [f"a {animal} in the {place}"],
                "neg": [f"a {other} in the {place}" for other in ("red", "cat", "owl") if other != animal],
            }
        )
    path = folder / "labels.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.slow
def test_adapt_with_lora_saves_and_reloads_the_adapter(tmp_path: Path) -> None:
    model_dir = build_bert_cross_encoder(tmp_path / "ce", WORDS)
    out = tmp_path / "reranker"
    result = adapt(
        _labels(tmp_path),
        embedder="hashing",
        scorer=f"cross-encoder:{model_dir}",
        lora=True,
        lora_options={"bce_epochs": 1, "pairwise_epochs": 1},
        out=out,
        k_text=4,
        k_image=0,
    )
    lora = result.report["lora"]
    assert lora["losses"]["bce"] and lora["losses"]["pairwise"] and lora["pairs"]["pairwise"] > 0
    assert "+lora:" in lora["scorer"] and "lora:" in format_report(result.report)
    assert (out / "lora" / "adapter_model.safetensors").is_file()
    config = json.loads((out / "config.json").read_text())
    assert (
        config["scorer"]["spec"] == f"cross-encoder:{model_dir.resolve()}"
        and config["scorer"]["lora"] == "lora"
    )
    assert config["scorer"]["name"] == lora["scorer"]
    for path in out.rglob("*"):
        if path.is_file():
            assert path.suffix in (".json", ".safetensors"), path  # nothing pickled
    hits = [
        Candidate("a", text="a fox in the den", source="mm_text", retrieval_score=0.8),
        Candidate("b", text="a cat in the river", source="mm_text", retrieval_score=0.6),
    ]
    loaded = load_reranker(out)
    assert loaded.scorer.name == lora["scorer"]
    before = [(r.id, r.score, r.raw_score) for r in result.reranker.rerank("the fox", hits)]
    after = [(r.id, r.score, r.raw_score) for r in loaded.rerank("the fox", hits)]
    assert [a[0] for a in after] == [b[0] for b in before]
    assert [v for a in after for v in a[1:]] == pytest.approx([v for b in before for v in b[1:]], rel=1e-5)


def test_lora_needs_a_model_scorer(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lora=True needs a model scorer"):
        adapt(_labels(tmp_path), embedder="hashing", scorer="fake", lora=True, k_text=4, k_image=0)


@pytest.mark.slow
def test_cli_lora(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mm_rerank_components.cli import main

    model_dir = build_bert_cross_encoder(tmp_path / "ce", WORDS)
    code = main(
        [
            "adapt",
            "--data",
            str(_labels(tmp_path)),
            "--out",
            str(tmp_path / "r"),
            "--embedder",
            "hashing",
            "--scorer",
            f"cross-encoder:{model_dir}",
            "--lora",
            "--lora-epochs",
            "1",
            "--k-text",
            "4",
            "--k-image",
            "0",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "lora: cross-encoder:" in captured.out
    assert (tmp_path / "r" / "lora" / "adapter_config.json").is_file()
    with pytest.raises(SystemExit):
        main(["adapt", "--data", "x.jsonl", "--out", "y", "--scorer", "nope:path"])
    assert "unknown scorer 'nope:path'" in capsys.readouterr().err
