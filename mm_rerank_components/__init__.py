"""mm-rerank-components: rerank mixed text and image search results on one unified relevance scale.

Example:
    >>> from mm_rerank_components import Candidate, MultimodalReranker, Query
    >>> from mm_rerank_components.scorers import FakeScorer
    >>> reranker = MultimodalReranker(FakeScorer())
    >>> hits = [Candidate("t1", text="a red fox"), Candidate("t2", text="owl")]
    >>> ranked = reranker.rerank(Query("red fox"), hits)
    >>> [(r.id, r.score) for r in ranked]
    [('t1', 1.0), ('t2', 0.0)]
"""

from __future__ import annotations

import logging

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
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
