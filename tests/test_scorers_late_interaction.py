"""LateInteractionScorer on tiny random ColBERT (BERT + linear projection) and ColQwen2 checkpoints.

Built from configs, saved and loaded back offline. Random weights prove the plumbing (markers, prompts,
MaxSim, batching, mixed text and images), never the quality.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from mm_rerank_components import Candidate, MultimodalReranker, Query  # noqa: E402
from mm_rerank_components.calibration import PerModalityCalibrator, PlattCalibrator  # noqa: E402
from mm_rerank_components.scorers.late_interaction import LateInteractionScorer  # noqa: E402
from mm_rerank_components.testing import (  # noqa: E402
    build_bert_cross_encoder,
    build_tiny_colbert,
    build_tiny_colpali,
    build_tiny_qwen_vl,
)

WORDS = ["red", "fox", "snow", "owl", "den", "a", "the", "in"] + [f"w{i}" for i in range(30)]
KW = {"local_files_only": True, "device": "cpu", "dtype": "float32"}


def _image(width: int, height: int, seed: int) -> Image.Image:
    gen = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(height, width, 3, generator=gen) * 255).to(torch.uint8).numpy()
    return Image.fromarray(pixels, mode="RGB")


def texts() -> list[Candidate]:
    values = ["red fox", "the owl in the snow", "fox " * 20, "w1 w2 w3", "a den w5 w6 w7", "w9 fox w10"]
    return [Candidate(f"t{i}", text=t) for i, t in enumerate(values)]


def mixed() -> list[Candidate]:
    out = texts()[:4]
    out += [Candidate(f"i{i}", image=_image(30 + 11 * i, 40 + 5 * i, i)) for i in range(4)]
    out += [Candidate("ti", text="a fox in the snow", image=_image(60, 44, 9))]
    return out


@pytest.fixture(scope="module")
def colbert_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_colbert(tmp_path_factory.mktemp("tiny-colbert"), WORDS)


@pytest.fixture(scope="module")
def colqwen_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_qwen_vl(tmp_path_factory.mktemp("tiny-colqwen2"), WORDS, kind="colqwen2")


def _maxsim(q: torch.Tensor, d: torch.Tensor) -> float:
    return float((q @ d.T).max(dim=1).values.sum())


def test_colbert_markers_augmentation_and_maxsim(colbert_path: Path) -> None:
    scorer = LateInteractionScorer(colbert_path, query_max_length=12, **KW)
    assert scorer.kind == "colbert" and scorer.modalities == frozenset({"text"})
    assert scorer.outputs_probabilities is False
    tok = scorer.encoder.tokenizer  # type: ignore[attr-defined]
    ids = scorer.encoder._ids("query", "red fox")  # type: ignore[attr-defined]
    assert tok.convert_ids_to_tokens(ids[:5]) == ["[CLS]", "[unused0]", "red", "fox", "[SEP]"]
    assert len(ids) == 12 and tok.convert_ids_to_tokens(ids[5:]) == ["[MASK]"] * 7
    doc_ids = scorer.encoder._ids("text", "a den")  # type: ignore[attr-defined]
    assert tok.convert_ids_to_tokens(doc_ids) == ["[CLS]", "[unused1]", "a", "den", "[SEP]"]
    query, candidates = Query("red fox"), texts()
    scores = scorer.score(query, candidates)
    q = scorer.encoder.embed([("query", "red fox")], max_items=1, max_cost=None)[0]
    d = scorer.encoder.embed([("text", candidates[1].text)], max_items=1, max_cost=None)[0]
    assert d.shape[0] == len(doc_ids) + 3  # [CLS] [unused1] the owl in the snow [SEP]
    assert scores[1] == pytest.approx(_maxsim(q, d), abs=1e-5)
    assert all(abs(float(torch.linalg.norm(row)) - 1.0) < 1e-5 for row in d)


def test_colbert_batch_size_1_and_8_agree(colbert_path: Path) -> None:
    query, candidates = Query("fox in the snow"), texts()
    eight = LateInteractionScorer(colbert_path, batch_size=8, max_batch_tokens=None, **KW)
    one = LateInteractionScorer(colbert_path, batch_size=1, **KW)
    for a, b in zip(eight.score(query, candidates), one.score(query, candidates), strict=True):
        assert a == pytest.approx(b, abs=1e-4)


def test_colbert_reads_text_only_and_needs_its_projection(colbert_path: Path, tmp_path: Path) -> None:
    scorer = LateInteractionScorer(colbert_path, **KW)
    with pytest.raises(ValueError, match="'i' is image: route it to another scorer"):
        scorer.score(Query("fox"), [Candidate("i", image=_image(20, 20, 1))])
    plain = build_bert_cross_encoder(tmp_path / "plain-bert", WORDS)  # a BERT without linear.weight
    with pytest.raises(ValueError, match="no ColBERT projection"):
        LateInteractionScorer(plain, **KW)


def test_warns_without_calibrator(colbert_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="mm_rerank_components.scorers.late_interaction"):
        LateInteractionScorer(colbert_path, **KW)
    assert "MaxSim scores are unbounded" in caplog.text
    caplog.clear()
    calibrator = PerModalityCalibrator({"text": PlattCalibrator(0.2, -4.0)})
    with caplog.at_level(logging.WARNING, logger="mm_rerank_components.scorers.late_interaction"):
        scorer = LateInteractionScorer(colbert_path, calibrator=calibrator, **KW)
    ours = [r for r in caplog.records if r.name == "mm_rerank_components.scorers.late_interaction"]
    assert ours == [] and scorer.default_calibrator() is calibrator


def test_colqwen2_mixed_text_and_images_in_one_call(colqwen_path: Path) -> None:
    scorer = LateInteractionScorer(colqwen_path, batch_size=8, **KW)
    assert scorer.kind == "colqwen2" and type(scorer.model).__name__ == "ColQwen2ForRetrieval"
    query, candidates = Query("red fox"), mixed()
    scores = scorer.score(query, candidates)
    assert len(scores) == len(candidates) and len(set(scores)) == len(scores)
    encoder = scorer.encoder
    q = encoder.embed([("query", "red fox")], max_items=1, max_cost=None)[0]
    assert q.shape[0] == len(encoder.inputs.token_ids(["Query: red fox" + "<|endoftext|>" * 10 + "\n"])[0])  # type: ignore[attr-defined]
    image_doc = encoder.embed([("image", candidates[5].image)], max_items=1, max_cost=None)[0]
    assert scores[5] == pytest.approx(_maxsim(q, image_doc), abs=1e-4)
    both = encoder.embed(
        [("image", candidates[-1].image), ("text", candidates[-1].text)], max_items=1, max_cost=None
    )
    assert scores[-1] == pytest.approx(_maxsim(q, torch.cat(both)), abs=1e-4)


def test_colqwen2_batch_size_1_and_8_agree(colqwen_path: Path) -> None:
    query, candidates = Query("fox in the snow"), mixed()
    eight = LateInteractionScorer(colqwen_path, batch_size=8, max_batch_tokens=None, **KW)
    one = LateInteractionScorer(colqwen_path, batch_size=1, **KW)
    for a, b in zip(eight.score(query, candidates), one.score(query, candidates), strict=True):
        assert a == pytest.approx(b, abs=1e-4)


def test_calibrated_through_the_reranker(colqwen_path: Path) -> None:
    calibrator = PerModalityCalibrator(
        {
            "text": PlattCalibrator(0.3, -2.0),
            "image": PlattCalibrator(0.1, -1.0),
            "text+image": PlattCalibrator(0.1, -1.0),
        }
    )
    scorer = LateInteractionScorer(colqwen_path, calibrator=calibrator, **KW)
    ranked = MultimodalReranker(scorer).rerank(Query("red fox"), mixed())
    assert len(ranked) == len(mixed()) and all(0.0 <= r.score <= 1.0 for r in ranked)
    assert [r.score for r in ranked] == sorted((r.score for r in ranked), reverse=True)


def test_colpali_through_its_processor(tmp_path: Path) -> None:
    folder = build_tiny_colpali(tmp_path / "tiny-colpali", WORDS)
    scorer = LateInteractionScorer(folder, batch_size=8, **KW)  # processor loaded from the folder
    assert scorer.kind == "colpali" and type(scorer.model).__name__ == "ColPaliForRetrieval"
    assert type(scorer.encoder.inputs.processor).__name__ == "ColPaliProcessor"  # type: ignore[attr-defined]
    query, candidates = Query("red fox"), mixed()
    scores = scorer.score(query, candidates)
    assert len(scores) == len(candidates)
    one = LateInteractionScorer(folder, batch_size=1, **KW).score(query, candidates)
    for a, b in zip(scores, one, strict=True):
        assert a == pytest.approx(b, abs=1e-4)
    q = scorer.encoder.embed([("query", "red fox")], max_items=1, max_cost=None)[0]
    page = scorer.encoder.embed([("image", candidates[5].image)], max_items=1, max_cost=None)[0]
    assert scores[5] == pytest.approx(_maxsim(q, page), abs=1e-4)


def test_score_many_equals_single_calls(colbert_path: Path) -> None:
    scorer = LateInteractionScorer(colbert_path, query_max_length=12, batch_size=16, **KW)
    calls = [(Query("red fox"), texts()[:4]), (Query("owl"), []), (Query("snow den w5"), texts()[2:])]
    together = scorer.score_many(calls)
    alone = [scorer.score(q, c) for q, c in calls]
    assert [len(s) for s in together] == [4, 0, 4]
    for a, b in zip(together, alone, strict=True):
        assert a == pytest.approx(b, abs=1e-6)


def test_score_many_with_images_equals_single_calls(colqwen_path: Path) -> None:
    scorer = LateInteractionScorer(colqwen_path, batch_size=16, **KW)
    calls = [(Query("red fox"), mixed()[:6]), (Query("snow"), mixed()[3:])]
    together = scorer.score_many(calls)
    alone = [scorer.score(q, c) for q, c in calls]
    for a, b in zip(together, alone, strict=True):
        assert a == pytest.approx(b, abs=1e-5)
