"""Extractive answers that quote the sentence answering the question (issue #13, item 4).

With a reranker, the extractive answerer scores every sentence of the top evidence with the reranker's
own models, quotes the best ones (best first) and names the item each comes from; the pipeline lets it
read deeper than the evidence it shows, and shows any further item the answer cites.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from mm_rerank_components import Candidate, MultimodalReranker, Query
from mm_rerank_components.answer import (
    EXTRACTIVE_NOTICE,
    Evidence,
    ExtractiveAnswerer,
    RAGPipeline,
    make_answerer,
)
from mm_rerank_components.scorers import FakeScorer

QUESTION = "Which animal has a comb on its head?"
HEDGEHOG = "Hedgehogs eat small animals, like frogs and insects. They curl up into a ball of sharp spines."
DOG = "Dog\n\nThe dog goes 'woof'. Dogs are loyal animals that guard the farm and its animals."
CHICKEN = (
    "Chicken\n\nThe chicken goes 'cluck'. Domestic chickens have wings, but are not capable of long-distance "
    "flight. They have a comb on their head."
)


def _farm_evidence() -> list[Evidence]:
    """The order the issue saw: a picture first, the passage holding the answer third."""
    return [
        Evidence(
            rank=1, id="hedgehog", modality="image", score=0.65, image="/x/hedgehog.webp", title="Hedgehog"
        ),
        Evidence(rank=2, id="dog", modality="text", score=0.61, text=DOG, title="Dog"),
        Evidence(rank=3, id="chicken", modality="text", score=0.60, text=CHICKEN, title="Chicken"),
    ]


def test_quotes_the_answering_sentence_and_names_its_item() -> None:
    answerer = ExtractiveAnswerer(reranker=MultimodalReranker(FakeScorer()))
    lines = answerer.compose(QUESTION, _farm_evidence()).splitlines()
    assert lines[0] == EXTRACTIVE_NOTICE and "no LLM configured" in lines[0]
    assert lines[1] == "They have a comb on their head. (Chicken [3])"
    assert all("Hedgehog" not in line for line in lines)  # a caption does not outrank a passage


def test_quotes_are_best_first_with_scores_and_a_margin() -> None:
    reranker = MultimodalReranker(FakeScorer())
    evidence = [
        Evidence(rank=1, id="a", modality="text", score=0.9, text="Owls fly. Red foxes hunt voles."),
        Evidence(rank=2, id="b", modality="text", score=0.8, text="The red fox hunts voles in snow."),
    ]
    quotes = ExtractiveAnswerer(reranker=reranker, quote_margin=1.0).quotes("red fox hunts voles", evidence)
    assert [q.text for q in quotes] == ["The red fox hunts voles in snow.", "Red foxes hunt voles."]
    assert quotes[0].score > quotes[1].score and quotes[0].evidence.rank == 2
    assert quotes[1].position == 1
    # a second quote far below the first is left out
    tight = ExtractiveAnswerer(reranker=reranker, quote_margin=0.1).quotes("red fox hunts voles", evidence)
    assert [q.text for q in tight] == ["The red fox hunts voles in snow."]


def test_sentences_per_item_and_max_quotes() -> None:
    reranker = MultimodalReranker(FakeScorer())
    evidence = [Evidence(rank=1, id="a", modality="text", score=0.9, text="Red fox. Red fox den. Owl.")]
    one = ExtractiveAnswerer(reranker=reranker, quote_margin=1.0).quotes("red fox den", evidence)
    assert [q.text for q in one] == ["Red fox den."]
    two = ExtractiveAnswerer(reranker=reranker, sentences_per_item=2, quote_margin=1.0)
    assert [q.text for q in two.quotes("red fox den", evidence)] == ["Red fox den.", "Red fox."]
    capped = ExtractiveAnswerer(reranker=reranker, sentences_per_item=3, max_quotes=1, quote_margin=1.0)
    assert len(capped.quotes("red fox den", evidence)) == 1


def test_pictures_only_are_quoted_by_caption() -> None:
    reranker = MultimodalReranker(FakeScorer())
    evidence = [
        Evidence(rank=1, id="i1", modality="image", score=0.8, image="/x/owl.webp", title="Snowy owl"),
        Evidence(rank=2, id="i2", modality="image", score=0.7, image="/x/fox.webp", title="Red fox"),
        Evidence(rank=3, id="i3", modality="image", score=0.6, image="/x/untitled.webp"),
    ]
    text = ExtractiveAnswerer(reranker=reranker, quote_margin=1.0).compose("red fox", evidence)
    assert text.splitlines()[1:] == ["Picture: Red fox. [2]", "Picture: Snowy owl. [1]"]
    bare = [Evidence(rank=1, id="i3", modality="image", score=0.6, image="/x/untitled.webp")]
    assert (
        ExtractiveAnswerer(reranker=reranker).compose("fox", bare).splitlines()[1]
        == "Picture: untitled.webp. [1]"
    )


def test_without_evidence_it_says_so() -> None:
    text = ExtractiveAnswerer(reranker=MultimodalReranker(FakeScorer())).compose(QUESTION, [])
    assert "no evidence was found" in text and "no LLM configured" in text


def test_argument_errors_name_the_value() -> None:
    with pytest.raises(ValueError, match=r"max_quotes must be >= 1 \(an int\), got 0"):
        ExtractiveAnswerer(max_quotes=0)
    with pytest.raises(ValueError, match="quote_margin must be between 0 and 1, got 2"):
        ExtractiveAnswerer(quote_margin=2)
    with pytest.raises(TypeError, match="reranker must have rerank"):
        ExtractiveAnswerer(reranker=object())  # type: ignore[arg-type]
    assert ExtractiveAnswerer().max_evidence == 3
    assert ExtractiveAnswerer(reranker=MultimodalReranker(FakeScorer())).max_evidence == 10


class _ListRetriever:
    def __init__(self, candidates: list[Candidate]) -> None:
        self.candidates = candidates

    def retrieve(self, query: Query) -> list[Candidate]:
        return self.candidates


def test_pipeline_reads_deeper_than_it_shows_and_shows_what_it_cites(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("MM_RERANK_LLM_MODEL", "OPENAI_MODEL", "MM_RERANK_LLM_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    candidates = [Candidate(f"filler{i}", text=f"Filler passage number {i}.") for i in range(4)]
    candidates.append(Candidate("chicken", text=CHICKEN, metadata={"title": "Chicken"}))
    # the chicken passage ranks last on the passage scale, below every filler
    scorer = FakeScorer(overrides={"chicken": 0.01, **{f"filler{i}": 0.9 - i / 10 for i in range(4)}})
    reranker = MultimodalReranker(scorer)
    rag = RAGPipeline(_ListRetriever(candidates), reranker, top_n=2)
    assert isinstance(rag.answerer, ExtractiveAnswerer) and rag.answerer.reranker is reranker
    answer = rag.ask(QUESTION)
    assert answer.text.splitlines()[1] == "They have a comb on their head. (Chicken [5])"
    assert [e.id for e in answer.evidence] == ["filler0", "filler1", "chicken"]
    assert set(answer.timings) == {"first_stage", "rerank", "answer"}
    assert all(v >= 0 for v in answer.to_dict()["timings_ms"].values())
    shallow = RAGPipeline(_ListRetriever(candidates), reranker, top_n=2, read_depth=2).ask(QUESTION)
    assert [e.id for e in shallow.evidence] == ["filler0", "filler1"]
    assert "Chicken" not in shallow.text


def test_make_answerer_hands_the_reranker_to_the_extractive_answerer() -> None:
    reranker = MultimodalReranker(FakeScorer())
    answerer = make_answerer(from_env=False, reranker=reranker)
    assert isinstance(answerer, ExtractiveAnswerer) and answerer.reranker is reranker


@pytest.mark.slow
def test_starter_models_answer_the_comb_question_from_the_chicken_passage() -> None:
    """The issue's case with the real starter models: the GCompris passages, the picture ranked first."""
    pytest.importorskip("torch")
    from mm_rerank_components.scorers.starter import StarterScorer

    evidence = _farm_evidence()
    evidence[0] = Evidence(
        rank=1,
        id="hedgehog",
        modality="text+image",
        score=0.65,
        text="Hedgehog",
        image="/x/h.webp",
        title="Hedgehog",
    )
    answerer = ExtractiveAnswerer(reranker=MultimodalReranker(StarterScorer()))
    quotes = answerer.quotes(QUESTION, evidence)
    assert quotes[0].text == "They have a comb on their head."
    assert quotes[0].evidence.id == "chicken" and not math.isnan(quotes[0].score)
    assert (
        answerer.compose(QUESTION, evidence).splitlines()[1]
        == "They have a comb on their head. (Chicken [3])"
    )


def test_a_learned_fusion_reranker_scores_sentences_through_its_base() -> None:
    """Fusion weighs first-stage signals a sentence lacks: its base reranker (same models) scores them."""
    from mm_rerank_components.adapt import LabelledList, LearnedFusionReranker, fit_fusion

    scorer = FakeScorer()
    lists = []
    for q, word in enumerate(["fox", "owl", "cat", "dog"] * 3):
        candidates = [
            Candidate(
                f"{q}-{j}", text=f"a {word if j == 0 else 'stone'} {j}", source="mm_text", retrieval_score=0.5
            )
            for j in range(4)
        ]
        query = Query(f"the {word}")
        lists.append(LabelledList(query, candidates, scorer.score(query, candidates), [1, 0, 0, 0]))
    base = MultimodalReranker(scorer)
    fusion = LearnedFusionReranker(base, fit_fusion(lists, seed=0))
    by_fusion = ExtractiveAnswerer(reranker=fusion, quote_margin=1.0).quotes(QUESTION, _farm_evidence())
    by_base = ExtractiveAnswerer(reranker=base, quote_margin=1.0).quotes(QUESTION, _farm_evidence())
    assert [(q.text, q.score) for q in by_fusion] == [(q.text, q.score) for q in by_base]
    assert by_fusion[0].text == "They have a comb on their head."
