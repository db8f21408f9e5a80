"""CrossEncoderScorer on a tiny random BERT classifier built from a config, saved and loaded offline."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from mm_rerank_components import Candidate, MultimodalReranker, Query  # noqa: E402
from mm_rerank_components.calibration import PerModalityCalibrator, PlattCalibrator  # noqa: E402
from mm_rerank_components.scorers import FakeScorer, ModalityRouter  # noqa: E402
from mm_rerank_components.scorers.cross_encoder import CrossEncoderScorer  # noqa: E402

WORDS = ["red", "fox", "snow", "owl", "den", "river", "a", "the", "in", "lives"] + [
    f"w{i}" for i in range(40)
]


def build_tiny_bert(folder: Path, num_labels: int = 1) -> Path:
    from mm_rerank_components.testing import build_bert_cross_encoder

    return Path(build_bert_cross_encoder(folder, WORDS, num_labels=num_labels))


@pytest.fixture(scope="module")
def bert_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="module")
def scorer(bert_path: Path) -> CrossEncoderScorer:
    return CrossEncoderScorer(bert_path, local_files_only=True, device="cpu", batch_size=8)


def passages() -> list[Candidate]:
    texts = ["red fox", "the owl lives in the snow", "fox " * 20, "w1 w2 w3", "a den in the river w5 w6 w7"]
    texts += [f"w{i} fox w{i + 1}" for i in range(7)]
    return [Candidate(f"p{i}", text=t) for i, t in enumerate(texts)]


def test_loads_offline_and_reports_logits(scorer: CrossEncoderScorer) -> None:
    assert type(scorer.model).__name__ == "BertForSequenceClassification"
    assert scorer.outputs_probabilities is False
    assert scorer.modalities == frozenset({"text"})
    assert scorer.name.startswith("cross-encoder:tiny-bert")


def test_scores_match_the_model_logit(scorer: CrossEncoderScorer) -> None:
    query, candidates = Query("red fox"), passages()
    scores = scorer.score(query, candidates)
    assert len(scores) == len(candidates) and all(math.isfinite(s) for s in scores)
    assert max(scores) - min(scores) > 1e-3
    one = scorer.tokenizer("red fox", candidates[1].text, return_tensors="pt")
    with torch.inference_mode():
        logit = float(scorer.model(**one).logits[0, 0])
    assert scores[1] == pytest.approx(logit, abs=1e-5)


def test_batch_invariance(scorer: CrossEncoderScorer, bert_path: Path) -> None:
    query, candidates = Query("fox in the snow"), passages()
    single = CrossEncoderScorer(bert_path, local_files_only=True, device="cpu", batch_size=1)
    for a, b in zip(scorer.score(query, candidates), single.score(query, candidates), strict=True):
        assert a == pytest.approx(b, abs=1e-4)


def test_batches_follow_the_token_budget_and_tokenise_once(bert_path: Path) -> None:
    query, candidates = Query("fox in the snow"), passages()
    tight = CrossEncoderScorer(bert_path, local_files_only=True, device="cpu", max_batch_tokens=1)
    calls: list[int] = []
    forward = tight.forward

    def counting_forward(batch: dict) -> torch.Tensor:
        calls.append(int(batch["input_ids"].shape[0]))
        return forward(batch)

    tight.forward = counting_forward  # type: ignore[method-assign]
    tokenize_calls = []
    tokenize = tight.tokenize_pairs
    tight.tokenize_pairs = lambda q, t: tokenize_calls.append(len(t)) or tokenize(q, t)  # type: ignore[method-assign]
    loose = CrossEncoderScorer(bert_path, local_files_only=True, device="cpu", max_batch_tokens=None)
    for a, b in zip(tight.score(query, candidates), loose.score(query, candidates), strict=True):
        assert a == pytest.approx(b, abs=1e-4)
    assert calls == [1] * len(candidates)  # a budget of 1 token: one pair per forward pass
    assert tokenize_calls == [len(candidates)]  # every pair tokenised once, in one call
    assert loose.max_batch_tokens is None and tight.max_batch_tokens == 1
    assert CrossEncoderScorer(bert_path, local_files_only=True, device="cpu").max_batch_tokens == 1024
    with pytest.raises(ValueError, match="max_batch_tokens must be a positive int, 'auto' or None"):
        CrossEncoderScorer(bert_path, local_files_only=True, device="cpu", max_batch_tokens=0)


def test_sigmoid_activation_gives_probabilities(bert_path: Path, scorer: CrossEncoderScorer) -> None:
    probs = CrossEncoderScorer(bert_path, activation="sigmoid", local_files_only=True, device="cpu")
    assert probs.outputs_probabilities is True
    query, candidates = Query("red fox"), passages()
    raw = scorer.score(query, candidates)
    for p, r in zip(probs.score(query, candidates), raw, strict=True):
        assert 0.0 < p < 1.0
        assert p == pytest.approx(1.0 / (1.0 + math.exp(-r)), abs=1e-5)
    assert probs.name != scorer.name


def test_two_label_models_score_log_odds(tmp_path: Path) -> None:
    path = build_tiny_bert(tmp_path / "two", num_labels=2)
    two = CrossEncoderScorer(path, local_files_only=True, device="cpu")
    batch = two.tokenizer("red fox", "a den", return_tensors="pt")
    with torch.inference_mode():
        logits = two.model(**batch).logits[0]
    [score] = two.score(Query("red fox"), [Candidate("p", text="a den")])
    assert score == pytest.approx(float(logits[1] - logits[0]), abs=1e-5)


def test_rejects_images_and_image_queries(scorer: CrossEncoderScorer) -> None:
    from PIL import Image

    image = Image.new("RGB", (8, 8))
    with pytest.raises(ValueError, match="reads text candidates only; 'i' is image"):
        scorer.score(Query("fox"), [Candidate("i", image=image)])
    with pytest.raises(ValueError, match="the query has no text"):
        scorer.score(Query(image=image), [Candidate("p", text="fox")])


def test_bad_arguments(bert_path: Path) -> None:
    with pytest.raises(ValueError, match="activation must be 'none' or 'sigmoid'"):
        CrossEncoderScorer(bert_path, activation="softmax", local_files_only=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        CrossEncoderScorer(bert_path, batch_size=0, local_files_only=True)
    with pytest.raises(ValueError, match="could not load the cross-encoder"):
        CrossEncoderScorer(bert_path / "nope", local_files_only=True, device="cpu")


def test_routing_text_to_cross_encoder_and_images_elsewhere(scorer: CrossEncoderScorer) -> None:
    from PIL import Image

    calibrated = CrossEncoderScorer(
        model=scorer.model,
        tokenizer=scorer.tokenizer,
        device="cpu",
        calibrator=PerModalityCalibrator({"text": PlattCalibrator(0.5, 0.0)}),
    )
    router = ModalityRouter({"text": calibrated, "image": FakeScorer(name="img")})
    candidates = [*passages()[:4], Candidate("img", image=Image.new("RGB", (16, 16), (200, 0, 0)))]
    ranked = MultimodalReranker(router).rerank(Query("red fox"), candidates)
    assert {r.id for r in ranked} == {c.id for c in candidates}
    raw = {
        c.id: s for c, s in zip(candidates[:4], scorer.score(Query("red fox"), candidates[:4]), strict=True)
    }
    for r in ranked:
        assert 0.0 <= r.score <= 1.0
        if r.modality == "text":
            assert r.score == pytest.approx(1.0 / (1.0 + math.exp(-0.5 * raw[r.id])), abs=1e-5)


def test_score_many_merges_calls_and_equals_single_calls(bert_path: Path) -> None:
    merged = CrossEncoderScorer(bert_path, local_files_only=True, device="cpu", batch_size=64)
    calls = [
        (Query("red fox"), passages()[:7]),
        (Query("owl"), []),
        (Query("w3 snow the den"), passages()[4:]),
        (Query("river"), passages()[2:3]),
    ]
    sizes: list[int] = []
    original = merged.forward
    merged.forward = lambda batch: (sizes.append(len(batch["input_ids"])), original(batch))[1]  # type: ignore[method-assign]
    together = merged.score_many(calls)
    assert sizes == [sum(len(c) for _, c in calls)]  # one shared pass for every pair of every call
    alone = [merged.score(q, c) for q, c in calls]
    assert [len(s) for s in together] == [len(c) for _, c in calls]
    for a, b in zip(together, alone, strict=True):
        assert a == pytest.approx(b, abs=1e-6)
    with pytest.raises(ValueError, match="image"):
        merged.score_many([(Query("fox"), [Candidate("i", image="pic.png")])])


@pytest.mark.parametrize("backend", ["torch-int8", "onnx", "onnx-int8"])
def test_faster_cpu_backends_agree_with_fp32(
    bert_path: Path, scorer: CrossEncoderScorer, backend: str
) -> None:
    if backend.startswith("onnx"):
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnx")
    fast = CrossEncoderScorer(bert_path, local_files_only=True, device="cpu", batch_size=8, backend=backend)
    query, candidates = Query("red fox in the snow"), passages()
    reference, scores = scorer.score(query, candidates), fast.score(query, candidates)
    assert fast.name != scorer.name and fast.backend == backend  # cached scores are never mixed
    if backend == "onnx":  # the same fp32 graph: equal to rounding
        assert scores == pytest.approx(reference, abs=1e-4)
    else:  # int8 weights: close, not equal (ranking agreement on a real-shaped model: the benchmark)
        assert scores == pytest.approx(reference, abs=0.05) and scores != reference
    if backend == "torch-int8":
        assert "quantized" in type(fast.model.bert.encoder.layer[0].attention.self.query).__module__
    merged = fast.score_many([(query, candidates[:5]), (Query("owl"), candidates[5:])])
    alone = [fast.score(query, candidates[:5]), fast.score(Query("owl"), candidates[5:])]
    # int8 quantises activations with one scale per batch, so a score moves slightly with its batch-mates
    tolerance = 1e-5 if backend == "onnx" else 0.01
    for a, b in zip(merged, alone, strict=True):
        assert a == pytest.approx(b, abs=tolerance)
    with pytest.raises(ValueError, match="logits\\(\\) needs backend='torch'"):
        fast.logits(query, candidates)


def test_bad_backend_is_named(bert_path: Path) -> None:
    with pytest.raises(ValueError, match="backend must be one of .*got 'int4'"):
        CrossEncoderScorer(bert_path, local_files_only=True, device="cpu", backend="int4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="runs on the CPU, but the model is on cuda"):
        from mm_rerank_components.scorers.onnx import check_backend

        check_backend("onnx", "cuda:0")
