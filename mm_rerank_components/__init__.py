"""mm-rerank-components: rerank mixed text and image search results on one unified relevance scale.

Example:
    >>> from mm_rerank_components import Candidate, MultimodalReranker, Query
    >>> from mm_rerank_components.scorers import FakeScorer
    >>> reranker = MultimodalReranker(FakeScorer())
    >>> hits = [Candidate("t1", text="a red fox"), Candidate("t2", text="owl")]
    >>> ranked = reranker.rerank(Query("red fox"), hits)
    >>> [(r.id, r.score) for r in ranked]
    [('t1', 1.0), ('t2', 0.0)]

A saved reranker folder (``mm-rerank adapt``) loads with :func:`load_reranker` (imported on first use, so
``import mm_rerank_components`` stays light):

    >>> reranker = load_reranker("my-reranker")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from mm_rerank_components.calibration import Calibrator
from mm_rerank_components.media import ImageLoadError, ImageOptions, load_image
from mm_rerank_components.reranker import (
    CandidateError,
    CascadeReranker,
    MultimodalReranker,
    Reranker,
    ScoreCache,
    ScorerError,
)
from mm_rerank_components.scorers.base import Scorer
from mm_rerank_components.types import Candidate, ImageRef, Modality, Precomputed, Query, RankedCandidate

if TYPE_CHECKING:
    from mm_rerank_components.adapt.folder import load_reranker

__version__ = "0.1.0"

__all__ = [
    "Calibrator",
    "Candidate",
    "CandidateError",
    "CascadeReranker",
    "ImageLoadError",
    "ImageOptions",
    "ImageRef",
    "Modality",
    "MultimodalReranker",
    "Precomputed",
    "Query",
    "RankedCandidate",
    "Reranker",
    "ScoreCache",
    "Scorer",
    "ScorerError",
    "__version__",
    "load_image",
    "load_reranker",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())


def __getattr__(name: str) -> Any:
    # the product layer (adapt) loads only when asked for: the core never imports it
    if name == "load_reranker":
        from mm_rerank_components.adapt.folder import load_reranker

        return load_reranker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
