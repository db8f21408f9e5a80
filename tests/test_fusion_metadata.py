"""Learned fusion with metadata features: a candidate without the field is neither rewarded nor lost."""

from __future__ import annotations

import numpy as np

from mm_rerank_components import Candidate, Query
from mm_rerank_components.adapt import LabelledList, fit_fusion
from mm_rerank_components.scorers import FakeScorer


def _lists(scorer: FakeScorer, missing_every: int = 0) -> list[LabelledList]:
    rng = np.random.default_rng(0)
    out = []
    for q in range(20):
        candidates = []
        for j in range(8):
            relevant = j < 2
            meta = (
                {}
                if missing_every and (q * 8 + j) % missing_every == 0
                else {"year": int(rng.integers(1990, 2020))}
            )
            candidates.append(
                Candidate(
                    f"q{q}d{j}",
                    text="a fox in the den" if relevant else f"an owl {j}",
                    source="mm_text",
                    retrieval_score=float(rng.normal(0.6 if relevant else 0.2, 0.2)),
                    metadata=meta,
                )
            )
        query = Query("the fox")
        out.append(
            LabelledList(query, candidates, scorer.score(query, candidates), [int(j < 2) for j in range(8)])
        )
    return out


def _hits() -> list[Candidate]:
    return [
        Candidate(
            "fox", text="a fox in the den", source="mm_text", retrieval_score=0.6, metadata={"year": 2001}
        ),
        Candidate("owl-no-year", text="an owl at night", source="mm_text", retrieval_score=0.2),
        Candidate(
            "owl", text="an owl at night", source="mm_text", retrieval_score=0.2, metadata={"year": 2010}
        ),
    ]


def test_a_missing_field_is_not_read_as_year_zero() -> None:
    scorer = FakeScorer()
    model = fit_fusion(_lists(scorer), seed=0, metadata_fields=["year"], bm25=False)
    assert 1990 < model.impute["meta:year"] < 2020
    hits = _hits()
    scores = dict(
        zip(
            [c.id for c in hits],
            model.predict("the fox", hits, scorer.score(Query("the fox"), hits)),
            strict=True,
        )
    )
    assert scores["fox"] > scores["owl-no-year"]
    assert abs(scores["owl-no-year"] - scores["owl"]) < 0.2  # the year barely matters; its absence neither


def test_missing_values_in_training_are_imputed_the_same_way() -> None:
    scorer = FakeScorer()
    model = fit_fusion(_lists(scorer, missing_every=3), seed=0, metadata_fields=["year"], bm25=False)
    hits = _hits()
    scores = model.predict("the fox", hits, scorer.score(Query("the fox"), hits))
    assert scores[0] == max(scores)
    assert all(np.isfinite(scores))
