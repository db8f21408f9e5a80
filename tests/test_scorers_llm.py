"""LLMYesNoScorer on a tiny random Qwen3 causal LM built from a config, saved and loaded back offline.

Random weights prove the plumbing (prompts, label tokens, padding, batching), never the quality.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from mm_rerank_components import Candidate, MultimodalReranker, Query  # noqa: E402
from mm_rerank_components.scorers import FakeScorer, ModalityRouter  # noqa: E402
from mm_rerank_components.scorers._yesno import YesNoPrompt  # noqa: E402
from mm_rerank_components.scorers.llm import LLM_PROMPT_PRESETS, LLMYesNoScorer  # noqa: E402
from mm_rerank_components.testing import build_tiny_qwen3_lm  # noqa: E402

WORDS = ["red", "fox", "snow", "owl", "den", "a", "the", "Yes", "No"] + [f"w{i}" for i in range(40)]
PRESET_WORDS = sorted(
    {w for p in LLM_PROMPT_PRESETS.values() for w in re.findall(r"\w+|[^\w\s]+", p.template)}
)


@pytest.fixture(scope="module")
def lm_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_qwen3_lm(tmp_path_factory.mktemp("tiny-qwen3"), [*WORDS, *PRESET_WORDS])


@pytest.fixture(scope="module")
def scorer(lm_path: Path) -> LLMYesNoScorer:
    return LLMYesNoScorer(lm_path, local_files_only=True, device="cpu", dtype="float32", batch_size=8)


def passages() -> list[Candidate]:
    texts = ["red fox", "the owl in the snow", "fox " * 30, "w1 w2 w3", "a den w5 w6 w7 w8 w9"]
    texts += [f"w{i} fox w{i + 1}" for i in range(7)]
    return [Candidate(f"p{i}", text=t) for i, t in enumerate(texts)]


def test_qwen3_reranker_prompt_and_label_tokens(scorer: LLMYesNoScorer) -> None:
    text = scorer.build_prompt(Query("red fox"), Candidate("p", text="a den"))
    assert text.startswith("<|im_start|>system\nJudge whether the Document meets the requirements")
    assert "<|im_start|>user\n<Instruct>: Given a web search query" in text
    assert "<Query>: red fox\n<Document>: a den<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    vocab = scorer.tokenizer.get_vocab()
    assert scorer.head.positive_ids == [vocab["yes"]] and scorer.head.negative_ids == [vocab["no"]]
    assert scorer.outputs_probabilities is True and scorer.modalities == frozenset({"text"})


def test_bge_gemma_prompt_is_plain_text_after_bos(lm_path: Path) -> None:
    gemma = LLMYesNoScorer(lm_path, prompt="bge-gemma", local_files_only=True, device="cpu")
    text = gemma.build_prompt(Query("red fox"), Candidate("p", text="a den"))
    assert text.startswith("A: red fox\nB: a den\nGiven a query A and a passage B")
    vocab = gemma.tokenizer.get_vocab()
    assert gemma.head.positive_ids == [vocab["Yes"]] and gemma.head.negative_ids == [vocab["No"]]


def test_scores_are_probabilities_of_yes_against_no(scorer: LLMYesNoScorer) -> None:
    query, candidates = Query("red fox"), passages()
    scores = scorer.score(query, candidates)
    assert all(0.0 < s < 1.0 and math.isfinite(s) for s in scores)
    assert max(scores) - min(scores) > 1e-3
    for i in (0, 2, 7):
        ids = scorer.tokenizer(
            scorer.build_prompt(query, candidates[i]), return_tensors="pt", add_special_tokens=False
        )
        with torch.inference_mode():
            logits = scorer.model(**ids).logits[0, -1]
        pair = torch.softmax(
            logits[[scorer.head.positive_ids[0], scorer.head.negative_ids[0]]].float(), dim=-1
        )
        assert scores[i] == pytest.approx(float(pair[0]), abs=1e-5)


def test_batch_size_1_and_8_agree(scorer: LLMYesNoScorer, lm_path: Path) -> None:
    query, candidates = Query("fox in the snow"), passages()
    single = LLMYesNoScorer(lm_path, local_files_only=True, device="cpu", dtype="float32", batch_size=1)
    budget = LLMYesNoScorer(lm_path, local_files_only=True, device="cpu", dtype="float32", max_batch_tokens=1)
    batched = scorer.score(query, candidates)
    for a, b, c in zip(
        batched, single.score(query, candidates), budget.score(query, candidates), strict=True
    ):
        assert a == pytest.approx(b, abs=1e-4) and a == pytest.approx(c, abs=1e-4)
    reversed_scores = scorer.score(query, candidates[::-1])[::-1]
    for a, b in zip(batched, reversed_scores, strict=True):
        assert a == pytest.approx(b, abs=1e-4)


def test_mixed_call_routes_images_elsewhere(scorer: LLMYesNoScorer) -> None:
    image = Image.new("RGB", (8, 8), (200, 0, 0))
    with pytest.raises(ValueError, match="reads text candidates only; 'i' is image"):
        scorer.score(Query("fox"), [Candidate("i", image=image)])
    with pytest.raises(ValueError, match="the query has no text"):
        scorer.score(Query(image=image), [Candidate("p", text="fox")])
    router = ModalityRouter({"text": scorer, "image": FakeScorer(name="img")})
    candidates = [*passages()[:3], Candidate("i", image=image)]
    ranked = MultimodalReranker(router).rerank(Query("red fox"), candidates)
    assert {r.id for r in ranked} == {c.id for c in candidates}
    assert all(0.0 <= r.score <= 1.0 for r in ranked)


def test_long_text_is_cut(lm_path: Path) -> None:
    short = LLMYesNoScorer(lm_path, max_text_tokens=5, local_files_only=True, device="cpu")
    text = short.build_prompt(Query("fox"), Candidate("p", text=" ".join(WORDS[9:40])))
    assert "<Document>: w0 w1 w2 w3 w4<|im_end|>" in text


def test_bad_settings_fail_clearly(lm_path: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown prompt preset 'nope'"):
        LLMYesNoScorer(lm_path, prompt="nope", local_files_only=True)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        LLMYesNoScorer(lm_path, batch_size=0, local_files_only=True)
    with pytest.raises(ValueError, match="label 'maybe' is not in this tokenizer's vocabulary"):
        LLMYesNoScorer(
            lm_path,
            prompt=YesNoPrompt(template="{query} {document}", positive_label="maybe"),
            local_files_only=True,
            device="cpu",
        )
    with pytest.raises(ValueError, match="could not load the causal LM"):
        LLMYesNoScorer(tmp_path / "missing", local_files_only=True, device="cpu")
    assert LLMYesNoScorer(lm_path, local_files_only=True, device="cpu").score(Query("fox"), []) == []


def test_score_many_equals_single_calls(scorer: LLMYesNoScorer) -> None:
    calls = [(Query("red fox"), passages()[:5]), (Query("owl"), []), (Query("snow den"), passages()[3:])]
    together = scorer.score_many(calls)
    alone = [scorer.score(q, c) for q, c in calls]
    assert [len(s) for s in together] == [5, 0, len(passages()) - 3]
    for a, b in zip(together, alone, strict=True):
        assert a == pytest.approx(b, abs=1e-6)
    assert scorer.score_many([]) == []
