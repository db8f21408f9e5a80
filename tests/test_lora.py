"""LoRA fine-tuning (peft) of the yes/no and cross-encoder scorers on tiny random models.

Random weights: the tests prove the training plumbing (losses fall on a tiny synthetic set, seeded
determinism, save/load round trip), never quality.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from PIL import Image  # noqa: E402

from mm_rerank_components import Candidate, Query  # noqa: E402
from mm_rerank_components.adapt.lora import (  # noqa: E402
    LoraExample,
    as_examples,
    default_targets,
    load_lora,
    lora_finetune,
)
from mm_rerank_components.scorers.cross_encoder import CrossEncoderScorer  # noqa: E402
from mm_rerank_components.scorers.vlm import VLMYesNoScorer  # noqa: E402
from mm_rerank_components.testing import build_bert_cross_encoder, build_tiny_qwen_vl  # noqa: E402

WORDS = ["red", "fox", "snow", "owl", "den", "wolf", "cat", "a", "the", "in"] + [f"w{i}" for i in range(20)]
KW = {"local_files_only": True, "device": "cpu", "dtype": "float32"}


def _picture(colour: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (40, 40), colour)


def text_examples() -> list[LoraExample]:
    return [
        LoraExample(
            Query("red fox"),
            [Candidate("p1", text="a red fox in the den")],
            [Candidate("n1", text="an owl w1 w2")],
        ),
        LoraExample(
            Query("snow owl"),
            [Candidate("p2", text="the owl in the snow")],
            [Candidate("n2", text="a cat w3")],
        ),
        LoraExample(
            Query("wolf"),
            [Candidate("p3", text="a wolf w4"), Candidate("p4", text="the wolf den")],
            [Candidate("n3", text="red cat"), Candidate("n4", text="w5 w6 w7")],
        ),
    ]


def mixed_examples() -> list[LoraExample]:
    out = text_examples()
    out.append(
        LoraExample(
            Query("red fox"),
            [Candidate("i1", image=_picture((200, 40, 0)))],
            [Candidate("i2", image=_picture((0, 0, 200)))],
        )
    )
    return out


@pytest.fixture(scope="module")
def vlm_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_qwen_vl(tmp_path_factory.mktemp("tiny-qwen2vl-lora"), WORDS)


@pytest.fixture(scope="module")
def bert_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(build_bert_cross_encoder(tmp_path_factory.mktemp("tiny-bert-lora"), WORDS))


def _all_candidates(examples: list[LoraExample]) -> tuple[Query, list[Candidate]]:
    return Query("red fox"), [c for e in examples for c in (*e.positives, *e.negatives)]


def test_vlm_bce_then_pairwise_lowers_the_loss_and_round_trips(vlm_path: Path, tmp_path: Path) -> None:
    scorer = VLMYesNoScorer(vlm_path, **KW)
    base_name = scorer.name
    query, candidates = _all_candidates(mixed_examples())
    before = scorer.score(query, candidates)
    result = lora_finetune(
        scorer,
        mixed_examples(),
        out=tmp_path / "adapter",
        bce_epochs=4,
        pairwise_epochs=3,
        learning_rate=5e-3,
        seed=0,
    )
    assert result.losses["bce"][-1] < result.losses["bce"][0]
    assert result.losses["pairwise"][-1] < result.losses["pairwise"][0]
    assert result.pairs == {"bce": 10, "pairwise": 7} and result.device == "cpu"
    assert all("visual" not in t for t in result.targets)
    after = scorer.score(query, candidates)
    assert max(abs(a - b) for a, b in zip(before, after, strict=True)) > 1e-3
    assert scorer.name.startswith(base_name + "+lora:")
    files = sorted(p.name for p in (tmp_path / "adapter").iterdir())
    assert files == ["adapter_config.json", "adapter_model.safetensors", "lora_training.json"]
    info = json.loads((tmp_path / "adapter" / "lora_training.json").read_text())
    assert info["losses"] == result.losses and info["seed"] == 0
    fresh = load_lora(VLMYesNoScorer(vlm_path, **KW), tmp_path / "adapter")
    assert fresh.name == scorer.name
    for a, b in zip(fresh.score(query, candidates), after, strict=True):
        assert a == pytest.approx(b, abs=1e-6)


def test_cross_encoder_lora_is_seeded_and_round_trips(bert_path: Path, tmp_path: Path) -> None:
    query, candidates = _all_candidates(text_examples())
    runs = []
    for run in range(2):
        scorer = CrossEncoderScorer(bert_path, **KW)
        result = lora_finetune(scorer, text_examples(), out=tmp_path / f"ce{run}", learning_rate=1e-2, seed=7)
        assert result.losses["bce"][-1] < result.losses["bce"][0]
        runs.append((result.losses, scorer.score(query, candidates), scorer.name))
    assert runs[0] == runs[1]  # same seed, same data: same losses, scores and adapter hash
    assert all(
        "query" in t or "key" in t or "value" in t
        for t in default_targets(CrossEncoderScorer(bert_path, **KW).model)
    )
    fresh = load_lora(CrossEncoderScorer(bert_path, **KW), tmp_path / "ce0")
    for a, b in zip(fresh.score(query, candidates), runs[0][1], strict=True):
        assert a == pytest.approx(b, abs=1e-6)
    assert all(math.isfinite(x) for x in runs[0][1])


def test_examples_from_labelled_lists_and_errors(bert_path: Path, tmp_path: Path) -> None:
    from mm_rerank_components.adapt import LabelledList

    labelled = LabelledList(
        "red fox", (Candidate("a", text="red fox"), Candidate("b", text="owl")), (0.9, 0.1), (2, 0), None
    )
    [example] = as_examples([labelled])
    assert [c.id for c in example.positives] == ["a"] and [c.id for c in example.negatives] == ["b"]
    with pytest.raises(TypeError, match="example 0 is a str"):
        as_examples(["nope"])
    with pytest.raises(ValueError, match="no training examples"):
        as_examples([LoraExample(Query("x"), [], [])])
    with pytest.raises(TypeError, match="cannot be fine-tuned with LoRA"):
        lora_finetune(object(), text_examples())
    with pytest.raises(ValueError, match="holds no LoRA adapter"):
        load_lora(CrossEncoderScorer(bert_path, **KW), tmp_path)
