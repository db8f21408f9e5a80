"""``FirstStageScorer``: the candidates' own first-stage similarity as the raw score (no second model)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mm_rerank_components.scorers.base import ALL_MODALITIES, BaseScorer
from mm_rerank_components.types import Candidate, Modality, Query

__all__ = ["FirstStageScorer"]


class FirstStageScorer(BaseScorer):
    """A "scorer" that returns each candidate's first-stage similarity (``retrieval_score``).

    Reranking with it and a per-modality calibrator is *calibrated fusion*: the routes' own scores,
    put on one probability scale. It isolates what calibration alone buys, with no second model.

    Example:
        >>> from mm_rerank_components.types import Candidate, Query
        >>> FirstStageScorer().score(Query("x"), [Candidate("a", text="t", retrieval_score=0.4)])
        [0.4]
    """

    name = "first-stage"
    outputs_probabilities = False
    modalities: frozenset[Modality] = ALL_MODALITIES

    def own_spec(self) -> tuple[str, dict[str, Any]] | None:
        """``"first-stage"`` (it has no settings); a subclass has none."""
        return ("first-stage", {}) if type(self) is FirstStageScorer else None

    def score(self, query: Query, candidates: Sequence[Candidate]) -> list[float]:
        out = []
        for c in candidates:
            if c.retrieval_score is None:
                raise ValueError(f"candidate {c.id!r} has no retrieval_score; FirstStageScorer needs one")
            out.append(float(c.retrieval_score))
        return out
